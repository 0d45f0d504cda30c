"""Fine-tuning under hostile inputs: a bad rerun never deletes the previous run, crafted or partial checkpoints,
non-finite numbers, a second writer, SIGTERM.

Each case runs `minibert-finetune`'s `main` in this process with a fresh tiny model (no pretraining needed) and
checks the exit status, the one `error:` line, and the files on disk before and after.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import (
    BAD_SHARED_VALUES,
    FINETUNE_TINY,
    Payload,
    cli_env,
    finetune_argv,
    make_tokenizer,
    one_error_line,
    run_main,
    snapshot,
    write_task,
)
from safetensors.torch import load_file

from finetune.__main__ import main
from finetune.args import DataArguments
from minibert.cli import UserError
from minibert.safety import LOCK_FILE, read_lock


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(str(tmp_path_factory.mktemp("rel_task")))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A fresh tiny MiniBERT (no dropout, so that a resumed run can be compared with an uninterrupted one)."""
    from minibert import MiniBertConfig, MiniBertForMaskedLM
    from minibert.hub import save_model_folder

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = MiniBertConfig(
        vocab_size=len(tokenizer), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **FINETUNE_TINY
    )
    path = str(tmp_path_factory.mktemp("rel_model"))
    save_model_folder(MiniBertForMaskedLM(config), tokenizer, path)
    return path


# 4 steps of 16 rows, evaluated and saved every 2 steps, no log lines or examples shown.
QUICK = (
    "--per_device_train_batch_size 16 --logging_steps 1000 --num_examples_shown 0 --max_train_steps 4 --eval_steps 2"
)


def flags(out, task, model, *extra) -> list[str]:
    """QUICK, then `extra` (later flags win)."""
    return finetune_argv(out, task, model, *QUICK.split(), *extra)


def run(argv, capsys) -> tuple[int, str]:
    return run_main(main, argv, capsys)


@pytest.fixture(scope="module")
def finished(task, model, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("rel_ft") / "out"
    assert main(flags(out, task, model)) == 0
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint-2", "checkpoint-4"]
    return str(out)


def copy_run(finished, tmp_path) -> str:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return str(out)


def write_csv(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    return str(path)


# ----------------------------------------------------------------------------------------------------------------
# A bad rerun never deletes the previous run
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["metric", "one class"])
def test_a_bad_rerun_leaves_the_previous_run_as_it_was(bad, finished, task, model, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    before = snapshot(out)
    if bad == "metric":
        argv = flags(out, task, model, "--metric_for_best_model", "acc", "--overwrite_output_dir", "true")
    else:
        one_class = write_csv(tmp_path / "one.csv", [(f"text {i}", "animal") for i in range(20)])
        argv = [
            "--model_name_or_path",
            model,
            "--train_file",
            one_class,
            "--output_dir",
            out,
            "--overwrite_output_dir",
            "true",
        ]
    code, err = run(argv, capsys)
    assert code == 2
    one_error_line(err)
    assert snapshot(out) == before


def test_a_rerun_into_an_earlier_run_must_say_it_replaces_it(finished, task, model, tmp_path, capsys):
    """The README's second fine-tuning line once replaced the demo's model silently."""
    out = copy_run(finished, tmp_path)
    before = snapshot(out)
    code, err = run(flags(out, task, model), capsys)
    assert code == 2
    assert "--overwrite_output_dir" in one_error_line(err)
    assert snapshot(out) == before
    code, err = run(flags(out, task, model, "--max_train_steps", 2, "--overwrite_output_dir", "true"), capsys)
    assert code == 0, err[-3000:]
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["checkpoint-2"]  # the old run's are gone


# ----------------------------------------------------------------------------------------------------------------
# Bad values: one line, exit 2, nothing written
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, named",
    [
        *BAD_SHARED_VALUES,
        (["--lr_scheduler_type", "sawtooth"], "--lr_scheduler_type"),
        (["--report_to", "nosuchtracker"], "--report_to"),
        (["--metric_for_best_model", "acc"], "--metric_for_best_model"),
    ],
)
def test_bad_values_end_in_one_error_line(extra, named, task, model, tmp_path, capsys):
    code, err = run(flags(tmp_path / "out", task, model, *extra), capsys)
    assert code == 2
    assert named in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "labels, named",
    [(["1.5", "inf"], "finite"), (["0", "300000"], "ids up to 300000")],
    ids=["inf regression target", "sparse class ids"],
)
def test_labels_that_cannot_train_are_refused(labels, named, model, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [(f"text number {i}", labels[i % 2]) for i in range(40)])
    code, err = run(["--model_name_or_path", model, "--train_file", train, "--output_dir", tmp_path / "out"], capsys)
    assert code == 2
    assert named in one_error_line(err)


# ----------------------------------------------------------------------------------------------------------------
# Folders that are not ours
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["[1, 2]", "{not json", None], ids=["list", "corrupt", "readme only"])
def test_an_output_dir_that_is_not_a_fine_tuning_run_is_refused(config, task, model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    if config is not None:
        (out / "config.json").write_text(config)
    before = snapshot(out)
    code, err = run(flags(out, task, model), capsys)
    assert code == 2
    assert "--output_dir" in one_error_line(err)
    assert snapshot(out) == before


def test_a_second_writer_is_refused(task, model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "started": "now"}))
        code, err = run(flags(out, task, model), capsys)
        assert code == 2
        assert f"pid {holder.pid}" in one_error_line(err)
        assert os.listdir(out) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------------------------------------------
# Resume: only complete fine-tuning checkpoints, no pickle with more than tensors
# ----------------------------------------------------------------------------------------------------------------
def test_resume_from_something_else_is_one_error_line(finished, task, model, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    pretraining = tmp_path / "pretraining_step_2"
    pretraining.mkdir()
    (pretraining / "trainer_state.json").write_text(json.dumps({"completed_steps": 2, "epoch": 0}))
    for where, named in ((model, "not a fine-tuning checkpoint"), (str(pretraining), "pretraining checkpoint")):
        code, err = run(flags(out, task, model, "--max_train_steps", 6, "--resume_from_checkpoint", where), capsys)
        assert code == 2
        assert named in one_error_line(err)


@pytest.mark.parametrize("name", ["rng_state.pth", "optimizer.pt", "scheduler.pt", "scaler.pt"])
def test_resume_never_runs_a_crafted_pickle(name, finished, task, model, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    marker = tmp_path / "pickle-ran"
    torch.save({"state": Payload(marker)}, os.path.join(out, "checkpoints", "checkpoint-4", name))
    before = snapshot(out)
    code, err = run(flags(out, task, model, "--max_train_steps", 6, "--resume_from_checkpoint", "last"), capsys)
    assert code == 2
    assert name in one_error_line(err)
    assert not marker.exists()
    assert snapshot(out) == before


def test_resume_last_skips_a_checkpoint_whose_save_was_interrupted(finished, task, model, tmp_path, capsys, caplog):
    out = copy_run(finished, tmp_path)
    partial = os.path.join(out, "checkpoints", "checkpoint-6")
    shutil.copytree(os.path.join(out, "checkpoints", "checkpoint-4"), partial)
    os.remove(os.path.join(partial, "trainer_state.json"))  # written last: a SIGKILL before it
    code, err = run(flags(out, task, model, "--max_train_steps", 6, "--resume_from_checkpoint", "last"), capsys)
    assert code == 0, err[-3000:]
    assert f"skipping {partial}" in caplog.text
    state = json.load(open(os.path.join(partial, "trainer_state.json")))  # rewritten by the resumed run
    assert state["global_step"] == 6


# ----------------------------------------------------------------------------------------------------------------
# Non-finite weights and SIGTERM
# ----------------------------------------------------------------------------------------------------------------
def _with_callback(monkeypatch, callback):
    from finetune import train as T

    original = T.build_trainer

    def build(*a, **k):
        trainer = original(*a, **k)
        trainer.add_callback(callback)
        return trainer

    monkeypatch.setattr(T, "build_trainer", build)


def test_non_finite_weights_are_never_saved_or_exported(task, model, tmp_path, capsys, monkeypatch):
    from transformers import TrainerCallback

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    _with_callback(monkeypatch, Poison())
    out = tmp_path / "out"
    code, err = run(flags(out, task, model, "--eval_steps", 1), capsys)
    assert code == 2
    assert "NaN or inf at step 3" in one_error_line(err)
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint-1", "checkpoint-2"]
    assert not (out / "model.safetensors").exists()


def test_sigterm_saves_a_checkpoint_exits_143_and_resumes(finished, task, model, tmp_path, capsys, monkeypatch):
    from transformers import TrainerCallback

    class Terminate(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as m:
        _with_callback(m, Terminate())
        out = tmp_path / "out"
        code, err = run(flags(out, task, model), capsys)
    assert code == 128 + signal.SIGTERM
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint-2"]  # saved at the next step boundary
    assert not (out / "model.safetensors").exists()  # nothing exported
    code, err = run(flags(out, task, model, "--resume_from_checkpoint", "last"), capsys)
    assert code == 0, err[-3000:]
    resumed, uninterrupted = (
        load_file(out / "model.safetensors"),
        load_file(os.path.join(finished, "model.safetensors")),
    )
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_full_disk_during_a_save_removes_the_half_written_checkpoint(task, model, tmp_path, capsys, monkeypatch):
    """ENOSPC while the second checkpoint's optimizer is written (simulated): one line, the half-written folder gone
    (it would keep the disk full and be picked by a resume), the first checkpoint resumes to the end."""
    import errno

    from transformers import Trainer

    original, calls = Trainer._save_optimizer_and_scheduler, []

    def full_disk(self, output_dir):
        calls.append(output_dir)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "optimizer.pt"))
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", full_disk)
    out = tmp_path / "out"
    code, err = run(flags(out, task, model), capsys)
    assert code == 2
    assert "no space left" in one_error_line(err) and "checkpoint-4" in one_error_line(err)
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint-2"]
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", original)
    code, err = run(flags(out, task, model, "--resume_from_checkpoint", "last"), capsys)
    assert code == 0, err[-3000:]
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint-2", "checkpoint-4"]


def test_a_model_whose_config_is_a_json_list_is_one_error_line(task, tmp_path, capsys):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text("[1, 2]")
    code, err = run(flags(tmp_path / "out", task, str(bad)), capsys)
    assert code == 2
    assert "config.json holds a JSON list" in one_error_line(err)


def test_a_run_config_that_is_not_utf8_is_one_error_line(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_bytes(b'{"seed": "\xff"}')
    code, err = run([str(config)], capsys)
    assert code == 2
    assert "UTF-8" in one_error_line(err)


def test_sigkill_during_saves_never_leaves_a_checkpoint_that_resume_picks_and_crashes_on(task, model, tmp_path, capsys):
    """A real run saving at every step, SIGKILLed at a few moments after its first save (a loop of trials, as the
    hostile tester ran): `--resume_from_checkpoint last` finishes the run every time."""
    import time

    env = cli_env(HF_HUB_OFFLINE="1")
    for trial, delay in enumerate((0.0, 0.15, 0.4)):
        out = tmp_path / f"trial{trial}"
        argv = flags(out, task, model, "--max_train_steps", 40, "--eval_steps", 1, "--save_total_limit", 2)
        with open(tmp_path / f"trial{trial}.log", "w") as log:
            victim = subprocess.Popen([sys.executable, "-m", "finetune", *argv], env=env, stdout=log, stderr=log)
            deadline = time.monotonic() + 180
            while not (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists():
                assert victim.poll() is None, open(tmp_path / f"trial{trial}.log").read()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(delay)
            victim.kill()
            victim.wait()
        assert read_lock(str(out / LOCK_FILE))["pid"] == victim.pid  # a SIGKILLed run leaves its lock ...
        code, err = run(argv + ["--resume_from_checkpoint", "last"], capsys)  # ... which is stale: taken over
        assert code == 0, err[-3000:]
        assert json.load(open(out / "all_results.json"))["train_samples"] > 0
        assert "checkpoint-40" in os.listdir(out / "checkpoints")


# ----------------------------------------------------------------------------------------------------------------
# Resume continues the same run, or refuses the change by name (issue #21 item 3, #25)
# ----------------------------------------------------------------------------------------------------------------
def _changed(value, annotation: str, choices=None):
    """Another value of a field's type (one of its choices: another one; a string: another name; a number: another
    number; a flag: flipped)."""
    if choices:
        return next(c for c in choices if c != value)
    if isinstance(value, bool) or annotation == "bool":
        return not value
    if isinstance(value, int) or "int" in annotation:
        return (value or 0) + 1
    if isinstance(value, float) or "float" in annotation:
        return (value or 0.5) / 2
    return f"{value or 'other'}-changed"


def _argument_groups():
    from finetune.args import DataArguments, FinetuneArguments, ModelArguments
    from minibert.cli import HubArguments

    return [ModelArguments(), DataArguments(), FinetuneArguments(), HubArguments()]


def test_the_resume_allow_list_names_only_real_fields():
    from finetune.args import RESUMABLE

    names = {f.name for group in _argument_groups() for f in dataclasses.fields(group)}
    assert not RESUMABLE - names, RESUMABLE - names


def test_every_argument_not_allowed_to_change_is_refused_on_resume_by_name():
    """Generated from the dataclasses: each field outside RESUMABLE, changed alone, is refused naming it; each field
    on it, changed alone, is not compared."""
    from finetune import checkpointing as C
    from finetune.args import RESUMABLE

    groups = _argument_groups()
    saved = C.run_settings(*groups)
    checked = 0
    for i, group in enumerate(groups):
        for f in dataclasses.fields(group):
            changed = list(groups)
            value = _changed(getattr(group, f.name), str(f.type), f.metadata.get("choices"))
            changed[i] = dataclasses.replace(group, **{f.name: value})
            settings = C.run_settings(*changed)
            if f.name in RESUMABLE:
                C.check_resume_settings("ckpt", saved, settings)  # allowed: no error
                assert f.name not in settings
                continue
            with pytest.raises(UserError, match=rf"was made with other settings than this run's: {f.name} "):
                C.check_resume_settings("ckpt", saved, settings)
            checked += 1
    assert checked >= 20  # the learning rate, schedule, data, model, precision... (a guard against an empty loop)


def test_a_checkpoint_records_its_settings_in_trainer_state(finished, task, model):
    from finetune.checkpointing import saved_settings

    saved = saved_settings(os.path.join(finished, "checkpoints", "checkpoint-4"))
    assert saved["labels"] == {"problem_type": "single_label_classification", "names": ["animal", "vehicle"]}
    assert saved["model_name_or_path"] == os.path.realpath(model)
    assert saved["learning_rate"] is None and saved["max_seq_length"] == 128
    assert "hub_token" not in saved and "output_dir" not in saved


@pytest.mark.parametrize(
    "change, named",
    [
        (["--learning_rate", "1e-2"], "learning_rate"),
        (["--lr_scheduler_type", "cosine"], "lr_scheduler_type"),
        (["--max_seq_length", "64"], "max_seq_length"),
        (["--weight_decay", "0.1"], "weight_decay"),
        (["--seed", "7"], "seed"),
    ],
)
def test_resume_with_changed_settings_is_refused(change, named, finished, task, model, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    before = snapshot(out)
    code, err = run(
        flags(out, task, model, "--max_train_steps", 6, "--resume_from_checkpoint", "last", *change), capsys
    )
    assert code == 2
    line = one_error_line(err)
    assert f"{named} " in line and "was made with other settings" in line
    assert "size mismatch" not in err
    assert snapshot(out) == before


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> str:
    """Another base model: wider, so that its weights cannot load into the first one's shapes."""
    from minibert import MiniBertConfig, MiniBertForMaskedLM
    from minibert.hub import save_model_folder

    tokenizer = make_tokenizer()
    config = MiniBertConfig(vocab_size=len(tokenizer), **{**FINETUNE_TINY, "hidden_size": 48, "intermediate_size": 50})
    path = str(tmp_path_factory.mktemp("rel_other_model"))
    save_model_folder(MiniBertForMaskedLM(config), tokenizer, path)
    return path


@pytest.mark.parametrize("recorded", [True, False], ids=["settings recorded", "an older checkpoint"])
def test_resume_with_another_base_model_is_one_error_line(
    recorded, finished, task, model, other_model, tmp_path, capsys
):
    out = copy_run(finished, tmp_path)
    if not recorded:  # a checkpoint from before the settings were kept: the weights' shapes still say it
        for name in os.listdir(os.path.join(out, "checkpoints")):
            path = os.path.join(out, "checkpoints", name, "trainer_state.json")
            state = json.load(open(path))
            state["stateful_callbacks"].pop("RunSettings")
            json.dump(state, open(path, "w"))
    before = snapshot(out)
    code, err = run(flags(out, task, other_model, "--max_train_steps", 6, "--resume_from_checkpoint", "last"), capsys)
    assert code == 2
    line = one_error_line(err)
    assert ("model_name_or_path" in line) if recorded else ("holds another model" in line)
    assert "size mismatch" not in err
    assert snapshot(out) == before


def test_resume_with_other_labels_is_one_error_line(model, tmp_path, capsys):
    """The same file name with a third class in it: the labels are named, no size-mismatch traceback."""
    rows = [(f"{word} number {i}", label) for i in range(16) for word, label in (("cat", "animal"), ("car", "vehicle"))]
    train = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "out"
    argv = ["--model_name_or_path", model, "--train_file", train, "--output_dir", out, *QUICK.split()]
    assert run(argv, capsys)[0] == 0
    write_csv(train, rows + [(f"boat number {i}", "ship") for i in range(16)])
    before = snapshot(out)
    code, err = run([*argv, "--max_train_steps", 6, "--resume_from_checkpoint", "last"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "labels " in line and "ship" in line
    assert "size mismatch" not in err
    assert snapshot(out) == before


def test_resume_may_extend_the_run_and_change_what_is_allowed(finished, task, model, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    allowed = ["--max_train_steps", 6, "--logging_steps", 3, "--save_total_limit", 3, "--per_device_eval_batch_size", 8]
    code, err = run(flags(out, task, model, "--resume_from_checkpoint", "last", *allowed), capsys)
    assert code == 0, err[-3000:]
    assert "checkpoint-6" in os.listdir(os.path.join(out, "checkpoints"))


# ----------------------------------------------------------------------------------------------------------------
# Inputs refused at the start, each as what it is (issue #21 items 1, 4, 5, 6)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1e39", "3.5e38", "1e-50"])
def test_a_learning_rate_float32_cannot_hold_is_refused_at_parse_time(value, task, model, tmp_path, capsys):
    code, err = run(flags(tmp_path / "out", task, model, "--learning_rate", value), capsys)
    assert code == 2
    assert "--learning_rate" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_csv_with_an_unterminated_quote_is_an_error_with_its_line(model, tmp_path, capsys):
    """Once: the quote swallowed the next 20 lines into one cell, and a warning said "dropped 1 of 21 rows"."""
    lines = ["text,label"] + [f"sentence number {i},{'animal' if i % 2 else 'vehicle'}" for i in range(21)]
    lines[3] = '"a quote that never closes,animal'
    train = tmp_path / "train.csv"
    train.write_text("\n".join(lines) + "\n")
    for tail in (None, '"a quoted text",vehicle'):  # the quote runs to the end of the file, or to a later quote
        if tail is not None:
            train.write_text("\n".join(lines[:-1] + [tail]) + "\n")
        code, err = run(
            ["--model_name_or_path", model, "--train_file", train, "--output_dir", tmp_path / "out"], capsys
        )
        assert code == 2
        line = one_error_line(err)
        assert f"{train} line 4:" in line and "quote" in line
        assert "dropped" not in err
        assert not (tmp_path / "out").exists()


def test_a_csv_with_a_quoted_multi_line_text_still_reads(tmp_path):
    from finetune.data import read_data_file

    path = tmp_path / "ok.csv"
    path.write_text('text,label\n"two lines\nof text, quoted",animal\n"say ""hi""",vehicle\nplain,animal\n')
    split = read_data_file(str(path), "train", "label")
    assert split.columns["text"] == ["two lines\nof text, quoted", 'say "hi"', "plain"]
    assert split.locations == ["line 2", "line 4", "line 5"]


@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "folder"])
def test_a_train_file_that_is_not_a_regular_file_is_named_as_such(kind, model, tmp_path, capsys):
    path = {"/dev/null": "/dev/null", "fifo": str(tmp_path / "data.csv"), "folder": str(tmp_path)}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # opening it would block until a writer came
    code, err = run(["--model_name_or_path", model, "--train_file", path, "--output_dir", tmp_path / "out"], capsys)
    assert code == 2
    named = {"/dev/null": "is a character device", "fifo": "is a named pipe", "folder": "is a directory"}[kind]
    assert named in one_error_line(err)
    assert not (tmp_path / "out").exists()


def _strip_tokenizer(folder) -> None:
    from minibert.checks import TOKENIZER_FILES

    for name in os.listdir(folder):
        if name in TOKENIZER_FILES or name.startswith(("tokenizer", "special_tokens")):
            os.remove(os.path.join(folder, name))


def test_a_model_folder_without_tokenizer_files_is_refused_before_training(task, model, tmp_path, capsys):
    """Once: AutoTokenizer built a 5-token tokenizer from config.json, every word was [UNK], and the run shipped it."""
    bare = tmp_path / "bare"
    shutil.copytree(model, bare)
    _strip_tokenizer(bare)
    code, err = run(flags(tmp_path / "out", task, str(bare)), capsys)
    assert code == 2
    assert "holds no tokenizer" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path):
    from transformers import BertTokenizer

    from minibert import MiniBertConfig
    from minibert.checks import check_tokenizer_fits

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    only_specials = BertTokenizer(vocab={t: i for i, t in enumerate(specials)})
    full = make_tokenizer()
    no_pad = BertTokenizer(vocab={t: i for i, t in enumerate(full.get_vocab()) if t != "[PAD]"}, pad_token=None)
    fits = MiniBertConfig(vocab_size=len(full), **FINETUNE_TINY)
    cases = [
        (only_specials, fits, "no vocabulary"),
        (full, MiniBertConfig(vocab_size=len(full) - 1, **FINETUNE_TINY), "only"),
        (full, MiniBertConfig(vocab_size=len(full) + 200, **FINETUNE_TINY), "more than padding"),
        (no_pad, fits, "no PAD token"),
    ]
    for tokenizer, config, named in cases:
        with pytest.raises(UserError, match=named):
            check_tokenizer_fits(tokenizer, config, "m", needs=("cls_token", "sep_token", "pad_token"))
    check_tokenizer_fits(full, fits, "m")  # its own tokenizer
    check_tokenizer_fits(full, MiniBertConfig(vocab_size=128, **FINETUNE_TINY), "m")  # padded to a multiple of 128


def test_export_bert_of_a_model_that_is_not_a_bert_is_refused_before_training(task, tmp_path, capsys):
    """Once: the whole run trained and wrote its model, then exit 2 ("this model is not a BERT")."""
    from minibert import MiniBertConfig, MiniBertForMaskedLM
    from minibert.hub import save_model_folder

    tokenizer = make_tokenizer()
    pre_ln = str(tmp_path / "pre_ln")
    config = MiniBertConfig(vocab_size=len(tokenizer), pre_layer_norm=True, **FINETUNE_TINY)
    save_model_folder(MiniBertForMaskedLM(config), tokenizer, pre_ln)
    code, err = run(flags(tmp_path / "out", task, pre_ln, "--export_bert", "true"), capsys)
    assert code == 2
    assert "--export_bert: this model is not a BERT (pre_layer_norm=True)" in one_error_line(err)
    assert not (tmp_path / "out").exists()  # no step taken, no checkpoint, nothing written


def test_user_error_is_a_value_error_for_library_callers(tmp_path):
    from finetune import train as T

    with pytest.raises(ValueError, match="no such file"):
        T.prepare_data(DataArguments(train_file=str(tmp_path / "missing.csv")), seed=0)


def test_resume_from_a_truncated_model_file_is_one_error_line(finished, task, model, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    weights = os.path.join(out, "checkpoints", "checkpoint-4", "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(10)
    before = snapshot(out)
    code, err = run(flags(out, task, model, "--max_train_steps", 6, "--resume_from_checkpoint", "last"), capsys)
    assert code == 2
    assert "model.safetensors is damaged or truncated" in one_error_line(err)
    assert snapshot(out) == before
