"""A bounded fuzz of the three CLIs' flags: random valid and invalid values, a fixed seed, a time budget.

Whatever the flags, a run ends in exit status 0, or 2 with exactly one `error:` line, never a traceback (in
this process an unexpected exception fails the test, naming the flags that raised it). The run count is fixed by
the seed; the time budget only cuts it short on a slow machine (at least MIN_CASES always run).
"""

import json
import os
import random
import time

import pytest
from conftest import FINETUNE_TINY, args_for, make_tokenizer, synthetic_documents, write_corpus, write_task

CASES = {"pretrain": 24, "finetune": 12, "convert": 16}
MIN_CASES = 6
BUDGET_S = {"pretrain": 18, "finetune": 12, "convert": 6}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Hostile values such as `--output_dir 0` are relative paths: they land in the test's own folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Inputs good and bad: a corpus, a task, a checkpoint, and files that are empty, binary, not UTF-8, a list, a
    named pipe, a model folder without tokenizer files."""
    from minibert import MiniBertConfig, MiniBertForMaskedLM
    from minibert.hub import save_model_folder

    root = tmp_path_factory.mktemp("fuzz_inputs")
    out = {
        "corpus": write_corpus(root / "corpus.txt", synthetic_documents(n_docs=30, seed=3)),
        "cache": str(root / "cache"),
    }
    out.update({f"task_{k}": v for k, v in write_task(str(root / "task")).items()})
    tokenizer = make_tokenizer()
    save_model_folder(
        MiniBertForMaskedLM(MiniBertConfig(vocab_size=len(tokenizer), **FINETUNE_TINY)), tokenizer, str(root / "model")
    )
    out["model"] = str(root / "model")
    (root / "empty.txt").write_text("")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.txt").write_bytes("caf\xe9 na\xefve\n".encode("latin-1"))
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "list_config").mkdir()
    (root / "list_config" / "config.json").write_text("[]")
    (root / "a_dir").mkdir()
    os.mkfifo(root / "fifo.txt")  # a reader that opened it would block: it must be refused unopened
    (root / "bare_model").mkdir()  # a model without tokenizer files
    for name in os.listdir(root / "model"):
        if not name.startswith(("tokenizer", "vocab", "special_tokens")):
            (root / "bare_model" / name).write_bytes((root / "model" / name).read_bytes())
    for name in (
        "empty.txt",
        "binary.bin",
        "latin1.txt",
        "list.json",
        "list_config",
        "a_dir",
        "fifo.txt",
        "bare_model",
    ):
        out[name] = str(root / name)
    out["missing"] = str(root / "no" / "such" / "file.txt")
    return out


def values(rng: random.Random, files: dict, kind: str) -> str:
    """A value for a flag of `kind`: usually a sensible one, often a hostile one."""
    hostile = ["-1", "0", "nan", "inf", "-inf", "1e309", "1e39", str(2**40), "", "x", "ünïcödé", "--", "None", "1.5"]
    if kind == "steps":  # a valid 2**40 steps is a run of years, not a bug: only values that must be refused
        hostile, kind = [v for v in hostile if v != str(2**40)], "int"
    good = {
        "int": ["1", "2", "3"],
        "float": ["0.1", "1e-3", "0.5"],
        "bool": ["true", "false", "maybe", "1"],
        "path": [
            files[k]
            for k in (
                "empty.txt",
                "binary.bin",
                "latin1.txt",
                "list.json",
                "a_dir",
                "missing",
                "fifo.txt",
                "bare_model",
            )
        ]
        + ["/proc/x", "/dev/null"],
        "str": ["linear", "cosine", "tensorboard", "none", "epoch"],
    }[kind]
    return rng.choice(good) if rng.random() < 0.5 else rng.choice(hostile + good[:1])


PRETRAIN_FLAGS = {
    "--max_train_steps": "steps",
    "--per_device_train_batch_size": "int",
    "--gradient_accumulation_steps": "int",
    "--learning_rate": "float",
    "--weight_decay": "float",
    "--adam_beta2": "float",
    "--warmup_ratio": "float",
    "--max_grad_norm": "float",
    "--seed": "int",
    "--checkpointing_steps": "str",
    "--checkpoints_total_limit": "int",
    "--lr_scheduler_type": "str",
    "--logging_steps": "int",
    "--eval_steps": "int",
    "--time_budget": "float",
    "--mlm_probability": "float",
    "--max_seq_length": "int",
    "--vocab_size": "int",
    "--dupe_factor": "int",
    "--train_file": "path",
    "--validation_file": "path",
    "--resume_from_checkpoint": "path",
    "--model_name_or_path": "path",
    "--output_dir": "path",
    "--overwrite_output_dir": "bool",
    "--dry_run": "bool",
    "--config_overrides": "overrides",
    "--fill_mask_prompts": "prompt",
    "--report_to": "str",
    "--with_tracking": "bool",
}
FINETUNE_FLAGS = {
    "--max_train_steps": "steps",
    "--per_device_train_batch_size": "int",
    "--learning_rate": "float",
    "--warmup_ratio": "float",
    "--seed": "int",
    "--lr_scheduler_type": "str",
    "--report_to": "str",
    "--metric_for_best_model": "str",
    "--eval_steps": "int",
    "--max_seq_length": "int",
    "--label_column": "str",
    "--text_column": "str",
    "--problem_type": "str",
    "--train_file": "path",
    "--validation_file": "path",
    "--resume_from_checkpoint": "path",
    "--model_name_or_path": "path",
    "--output_dir": "path",
    "--classifier_dropout": "float",
    "--save_total_limit": "int",
    "--validation_split_percentage": "float",
}


def mutate(rng, files, base: list[str], space: dict) -> list[str]:
    argv = list(base)
    for flag in rng.sample(sorted(space), rng.randint(1, 3)):
        kind = space[flag]
        if kind == "overrides":
            value = rng.choice(
                [
                    "vocab_size=10",
                    "type_vocab_size=1",
                    "max_position_embeddings=16",
                    "hidden_size=x",
                    "nosuchfield=1",
                    "hidden_size=64,num_attention_heads=5",
                    "=",
                    "hidden_dropout_prob=2",
                ]
            )
        elif kind == "prompt":
            value = rng.choice(["no mask", "[MASK] [MASK]", "a [MASK] b"])
        else:
            value = values(rng, files, kind)
        argv += [flag, value]
    return argv


def check(code, err: str, argv) -> None:
    assert "Traceback" not in err, (argv, err[-3000:])
    assert code in (0, 2), (code, argv, err[-2000:])
    if code == 2:
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1, (argv, err[-2000:])


def fuzz(name, make_argv, call, capsys) -> int:
    rng = random.Random(f"minibert-fuzz-{name}")
    start, done = time.monotonic(), 0
    for case in range(CASES[name]):
        if done >= MIN_CASES and time.monotonic() - start > BUDGET_S[name]:
            break
        argv = make_argv(rng, case)
        capsys.readouterr()
        try:
            code = call(argv)
        except SystemExit as e:  # argparse: usage + one `error:` line, status 2
            code = e.code
        check(code, capsys.readouterr().err, argv)
        done += 1
    return done


def test_pretrain_flags(files, tmp_path, capsys):
    from pretrain.__main__ import main

    def make(rng, case):
        base = args_for(
            files["corpus"],
            files["cache"],
            tmp_path / f"out{case}",
            "--max_train_steps",
            "1",
            "--logging_steps",
            "1",
            "--per_device_eval_batch_size",
            "8",
            model="hidden_size=32,num_hidden_layers=1,num_attention_heads=2",
        )
        return mutate(rng, files, base, PRETRAIN_FLAGS)

    assert fuzz("pretrain", make, main, capsys) >= MIN_CASES


def test_finetune_flags(files, tmp_path, capsys):
    from finetune.__main__ import main

    def make(rng, case):
        base = [
            "--model_name_or_path",
            files["model"],
            "--train_file",
            files["task_train"],
            "--validation_file",
            files["task_validation"],
            "--output_dir",
            str(tmp_path / f"out{case}"),
            "--max_train_steps",
            "1",
            "--num_examples_shown",
            "0",
            "--logging_steps",
            "1000",
        ]
        return mutate(rng, files, base, FINETUNE_FLAGS)

    assert fuzz("finetune", make, main, capsys) >= MIN_CASES


def test_convert_arguments(files, tmp_path, capsys):
    from minibert.convert import cli

    def make(rng, case):
        sources = [
            files["model"],
            files["missing"],
            files["empty.txt"],
            files["a_dir"],
            files["list_config"],
            "no/such/hub-id/x",
        ]
        existing = tmp_path / f"existing{case}"
        existing.mkdir()
        (existing / "notes.txt").write_text("mine")
        targets = [str(tmp_path / f"new{case}"), files["empty.txt"], "/proc/minibert", str(existing), files["model"]]
        argv = [rng.choice(sources), rng.choice(targets)]
        if rng.random() < 0.5:
            argv += ["--to", rng.choice(["bert", "minibert", "gpt"])]
        # --overwrite may replace any checkpoint folder, and an earlier case may have made a_dir one: not the model
        # the other cases read (SRC = DST is refused either way).
        if rng.random() < 0.3 and argv[1] != files["model"]:
            argv += ["--overwrite"]
        return argv

    assert fuzz("convert", make, cli, capsys) >= MIN_CASES
    assert json.load(open(os.path.join(files["model"], "config.json")))["model_type"] == "minibert"  # never overwritten


@pytest.mark.parametrize("cli", ["pretrain", "finetune", "convert"])
def test_help_renders_every_flag(cli, capsys):
    """`--help` prints every flag's text (a stray `%` in a help string once printed argparse's internal dict)."""
    from finetune.__main__ import main as finetune
    from minibert.convert import cli as convert
    from pretrain.__main__ import main as pretrain

    with pytest.raises(SystemExit) as exit_:
        {"pretrain": pretrain, "finetune": finetune, "convert": convert}[cli](["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--output_dir" in text or "dst" in text
    assert "'help':" not in text and "{'" not in text
    if cli == "pretrain":
        assert "~30 percent slower" in " ".join(text.split())
