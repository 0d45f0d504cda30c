"""`python -m pretrain` and `accelerate launch -m pretrain` as a user runs them: real processes, real signals.

- two processes (`accelerate launch --multi_gpu --num_processes 2`, a gloo group on this CPU-only machine) take
  the same steps as one process with the same global batch;
- SIGTERM mid-run leaves a checkpoint, exit status 143, and `--resume_from_checkpoint latest` finishes the run;
- bad arguments and bad data end with exit status 2 and one `error:` line, no traceback.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import (
    NO_DROPOUT,
    TINY_MODEL,
    accelerate_launch,
    args_for,
    assert_same_weights,
    cli_env,
    records,
    synthetic_documents,
    topics_corpus,
    weights,
    write_corpus,
)


def pretrain_cmd(*argv) -> list[str]:
    return [sys.executable, "-m", "pretrain", *map(str, argv)]


def run_pretrain_cli(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m pretrain *argv` to its end, its output captured."""
    return subprocess.run(pretrain_cmd(*argv), env=cli_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return topics_corpus(tmp_path_factory, "cli_corpus", n_docs=80, seed=2)


def test_two_processes_match_one_process_with_the_same_global_batch(corpus, cache, tmp_path):
    """2 processes x 8 sequences vs 1 process x 16: the same samples, masks and normalised loss per step, so the
    same weights up to the order of float additions (dropout off)."""
    common = [
        "--max_train_steps",
        8,
        "--logging_steps",
        1,
        "--eval_steps",
        4,
        "--config_overrides",
        TINY_MODEL + NO_DROPOUT,
    ]
    # Preprocess once here, so that the launched processes only read the cache.
    alone = run_pretrain_cli(*args_for(corpus, cache, tmp_path / "one", *common))
    assert alone.returncode == 0, alone.stderr[-3000:]
    launch = accelerate_launch(
        "-m", "pretrain", *args_for(corpus, cache, tmp_path / "two", *common, per_device_train_batch_size=8)
    )
    done = subprocess.run(launch, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.load(open(tmp_path / "two" / "all_results.json"))
    one = json.load(open(tmp_path / "one" / "all_results.json"))
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 16
    assert two["train_tokens"] == one["train_tokens"]  # the same sequences
    assert two["eval_samples"] == one["eval_samples"] and two["eval_masked_tokens"] == one["eval_masked_tokens"]
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    for a, b in zip(records(tmp_path / "two"), records(tmp_path / "one"), strict=True):
        assert a["learning_rate"] == b["learning_rate"]  # the schedule counts updates, not processes x updates
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert_same_weights(weights(tmp_path / "two"), weights(tmp_path / "one"), exact=False)


def wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")


def test_sigterm_checkpoints_and_the_run_resumes(corpus, cache, tmp_path):
    argv = args_for(
        corpus,
        cache,
        tmp_path,
        max_train_steps=60,
        checkpointing_steps=1000,
        logging_steps=1,
        config_overrides=TINY_MODEL,
    )
    proc = subprocess.Popen(
        pretrain_cmd(*argv), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and sum(1 for _ in open(metrics)) >= 3, proc)  # a few steps in
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by signal 15" in err and "Traceback" not in err
    latest = (tmp_path / "checkpoints" / "latest").read_text().strip()
    stopped_at = int(json.load(open(tmp_path / "checkpoints" / latest / "trainer_state.json"))["completed_steps"])
    assert 3 <= stopped_at < 60
    assert not (tmp_path / "model.safetensors").exists()

    done = run_pretrain_cli(*argv, "--resume_from_checkpoint", "latest")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(tmp_path / "all_results.json"))
    assert results["train_steps"] == 60
    steps = [r["step"] for r in records(tmp_path)]
    assert steps == list(range(1, 61))  # each step logged once, across the two processes


def _one_error_line(stderr: str) -> str:
    """conftest.one_error_line, but any line with `error:`: argparse's begins with the program's name."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def test_bad_arguments_end_with_one_clear_message(tmp_path, cache):
    done = run_pretrain_cli("--output_dir", tmp_path, "--learning_rate", "-1")
    assert done.returncode == 2, done.stderr[-3000:]
    assert _one_error_line(done.stderr) == "error: --learning_rate must be positive, not -1.0"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train_file", "/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
        (["--max_train_steps", "many"], "--max_train_steps"),  # argparse's own message (and exit 2)
        (["--config_overrides", "hidden_size=30,num_attention_heads=4"], "divisible"),
        (["--resume_from_checkpoint", "/nonexistent/ckpt"], "does not exist"),
        (["--mixed_precision", "fp16"], "fp16"),  # no GPU here
        (["--optimizer", "sgd"], "--optimizer"),
    ],
)
def test_more_bad_arguments(argv, message, tmp_path, cache, capsys):
    from pretrain.__main__ import main

    if torch.cuda.is_available() and "fp16" in argv:
        pytest.skip("fp16 works with a GPU")
    try:
        code = main(["--output_dir", str(tmp_path), "--data_cache_dir", cache, "--max_train_steps", "1", *argv])
    except SystemExit as e:  # argparse exits by itself, with status 2
        code = e.code
    assert code == 2
    assert message in _one_error_line(capsys.readouterr().err)


def test_bad_data_ends_with_one_clear_message(tmp_path, cache):
    bad = tmp_path / "corpus.txt"
    bad.write_bytes(b"one sentence\n\n\xff\xfe not utf-8\n")
    done = run_pretrain_cli("--train_file", bad, "--output_dir", tmp_path / "out", "--data_cache_dir", cache)
    assert done.returncode == 2
    assert "corpus.txt" in _one_error_line(done.stderr)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_bf16_on_gpu(corpus, cache, tmp_path):
    done = run_pretrain_cli(*args_for(corpus, cache, tmp_path, max_train_steps=20, mixed_precision="bf16"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(tmp_path / "all_results.json"))
    assert results["mixed_precision"] == "bf16" and results["skipped_steps"] == 0


def test_a_config_file_sets_defaults_that_flags_override(tmp_path):
    """A YAML file's values are the dataclasses' values as typed by their flags (YAML reads `1e-3` as a string),
    `null` is None (keep every checkpoint), and a flag given beside the file wins."""
    from pretrain.__main__ import parse

    path = tmp_path / "run.yaml"
    path.write_text(
        "checkpoints_total_limit: null\nlearning_rate: 1e-3\nmax_train_steps: 5\nfill_mask_prompts: ['a [MASK] b']\n"
        "checkpointing_steps: 200\nwhole_word_mask: true\n"
    )
    _, data_args, training_args, _ = parse([str(path), "--max_train_steps", "7"])
    assert training_args.checkpoints_total_limit is None
    assert training_args.learning_rate == 1e-3 and isinstance(training_args.learning_rate, float)
    assert training_args.max_train_steps == 7
    assert training_args.fill_mask_prompts == ["a [MASK] b"]
    assert training_args.checkpoint_interval() == 200
    assert data_args.whole_word_mask is True


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope: 1\n", "unknown key 'nope'"),
        ("optimizer: sgd\n", "not one of adamw, lamb"),
        ("max_train_steps: 2.5\n", "expected an integer"),
        ("learning_rate: fast\n", "learning_rate"),
    ],
)
def test_a_bad_config_file_value_is_one_clear_error(tmp_path, text, message):
    from minibert.cli import UserError
    from pretrain.__main__ import parse

    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        parse([str(path)])


def test_both_resume_keywords_continue_the_newest_checkpoint(tmp_path):
    """`latest` (run_mlm_no_trainer's word) and `last` (Trainer users') mean the same in both CLIs
    (`minibert.runs.RESUME_KEYWORDS`); finetune's side is tested in tests/test_reliability_finetune.py. The first run
    goes through the library's keywords (`pretrain(**options)`: the flags' names, their text values): the CLI's
    resumes take it for the same run (every compared setting equal)."""
    from minibert.cli import argument_groups
    from pretrain.__main__ import parse
    from pretrain.args import GROUPS
    from pretrain.train import pretrain, run

    corpus = write_corpus(tmp_path / "c.txt", synthetic_documents(n_docs=40, seed=3))
    common = args_for(corpus, str(tmp_path / "cache"), tmp_path / "out", "--checkpointing_steps", 1)
    options = {flag.removeprefix("--"): value for flag, value in zip(common[::2], common[1::2], strict=True)}
    assert argument_groups(GROUPS, options, "pretrain()") == parse(common)
    assert pretrain(**options, max_train_steps=2)["train_steps"] == 2
    assert run(*parse(common + ["--max_train_steps", "3", "--resume_from_checkpoint", "last"]))["train_steps"] == 3
    assert run(*parse(common + ["--max_train_steps", "4", "--resume_from_checkpoint", "latest"]))["train_steps"] == 4
    steps = [json.loads(line)["step"] for line in open(tmp_path / "out" / "metrics.jsonl") if '"loss"' in line]
    assert steps == sorted(set(steps))  # one run, continued: no step twice


@pytest.mark.parametrize("kind", ["missing", "/dev/null", "fifo"])
def test_a_config_file_that_is_not_a_file_is_named_as_such(kind, tmp_path, capsys):
    from pretrain.__main__ import main

    path = {"missing": str(tmp_path / "run.yaml"), "/dev/null": "/dev/null", "fifo": str(tmp_path / "fifo.yaml")}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block
    code = main(["--config", path])
    named = {"missing": "no such file", "/dev/null": "is a character device", "fifo": "is a named pipe"}[kind]
    assert code == 2
    assert named in _one_error_line(capsys.readouterr().err)
