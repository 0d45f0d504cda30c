"""Pretraining under hostile inputs: crafted checkpoints, changed settings, foreign folders, a second writer.

Every case runs `minibert-pretrain`'s `main` in this process and checks what a user sees (exit status 2, one
`error:` line, no traceback) and what is left on disk (nothing run, nothing pre-existing changed). The oracle for
"no pickle ran" is a marker file the crafted payload would create.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BAD_SHARED_VALUES, Payload, args_for, cli_env, one_error_line, run_main, snapshot, topics_corpus

from minibert.cli import UserError
from minibert.safety import LOCK_FILE, OutputLock, load_tensor_file
from pretrain.__main__ import main
from pretrain.checkpointing import LATEST_FILE, SCHEDULER_FILE, STATE_FILE


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return topics_corpus(tmp_path_factory, "rel_corpus", n_docs=40, seed=1)


def argv(corpus, cache, out, *extra) -> list[str]:
    return args_for(corpus, cache, out, "--logging_steps", 1, *extra)


def run_cli(args, capsys) -> tuple[int, str]:
    return run_main(main, args, capsys)


@pytest.fixture(scope="module")
def finished_run(corpus, cache, tmp_path_factory) -> str:
    """A run of 2 steps with its checkpoint (the source every test copies)."""
    out = tmp_path_factory.mktemp("rel_run") / "run"
    assert main(argv(corpus, cache, out, "--max_train_steps", 2)) == 0
    return str(out)


def copy_run(finished_run, tmp_path) -> tuple[str, str]:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return str(out), str(out / "checkpoints" / "step_2")


# ----------------------------------------------------------------------------------------------------------------
# No checkpoint file is ever unpickled
# ----------------------------------------------------------------------------------------------------------------
def write_payload(path, marker, torch_format: bool) -> None:
    obj = {"state": Payload(marker), "param_groups": []}
    if torch_format:
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)


# Each file accelerate's load_state can read, replaced by (or added as) a crafted pickle.
CRAFTED = [
    "optimizer.bin",
    "random_states_0.pkl",
    "custom_checkpoint_0.pkl",
    "scaler.pt",
    "sampler.bin",
    "dl_state_dict.bin",
    "pytorch_model.bin",
    SCHEDULER_FILE,
]


@pytest.mark.parametrize("torch_format", [True, False], ids=["torch.save", "pickle.dump"])
def test_the_restricted_loader_never_runs_a_pickle(tmp_path, torch_format):
    marker = tmp_path / "ran"
    write_payload(tmp_path / "evil.bin", marker, torch_format)
    with pytest.raises(UserError, match="refused unread"):
        load_tensor_file(str(tmp_path / "evil.bin"))
    assert not marker.exists()
    # ... while the files a checkpoint really holds load.
    torch.save({"a": torch.ones(2), "n": 3, "s": "x"}, tmp_path / "good.bin")
    assert torch.equal(load_tensor_file(str(tmp_path / "good.bin"))["a"], torch.ones(2))


@pytest.mark.parametrize("name", CRAFTED)
def test_resume_never_unpickles_a_crafted_checkpoint_file(name, finished_run, corpus, cache, tmp_path, capsys):
    out, ckpt = copy_run(finished_run, tmp_path)
    marker = tmp_path / "pickle-ran"
    if name == "pytorch_model.bin":  # weights as a pickle instead of safetensors
        os.remove(os.path.join(ckpt, "model.safetensors"))
    write_payload(os.path.join(ckpt, name), marker, torch_format=name != "custom_checkpoint_0.pkl")
    before = snapshot(out)
    code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 4, "--resume_from_checkpoint", "latest"), capsys)
    assert code == 2
    line = one_error_line(err)
    assert name in line or "step_2" in line
    assert not marker.exists(), "a crafted pickle ran"
    assert snapshot(out) == before  # the refused resume changed nothing


def test_every_torch_load_in_the_tree_is_restricted():
    """No `torch.load(` in the project's code outside the restricted loader (and none with weights_only=False)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders = []
    for package in ("minibert", "pretrain", "finetune", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                text = open(path, encoding="utf-8").read()
                if "weights_only=False" in text or ("torch.load(" in text and not path.endswith("safety.py")):
                    offenders.append(os.path.relpath(path, root))
    assert offenders == []


# ----------------------------------------------------------------------------------------------------------------
# Damaged checkpoints: one line naming the file, nothing changed
# ----------------------------------------------------------------------------------------------------------------
def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


DAMAGE = {
    "optimizer.bin missing": lambda c: os.remove(os.path.join(c, "optimizer.bin")),
    "optimizer.bin truncated": lambda c: _truncate(os.path.join(c, "optimizer.bin")),
    "model truncated": lambda c: _truncate(os.path.join(c, "model.safetensors")),
    "model zero bytes": lambda c: open(os.path.join(c, "model.safetensors"), "wb").close(),
    "rng state missing": lambda c: os.remove(os.path.join(c, "random_states_0.pkl")),
    "rng state corrupt": lambda c: open(os.path.join(c, "random_states_0.pkl"), "wb").write(b"\x80\x04garbage"),
    "schedule corrupt": lambda c: open(os.path.join(c, SCHEDULER_FILE), "w").write("[1, 2"),
    "schedule a list": lambda c: open(os.path.join(c, SCHEDULER_FILE), "w").write("[1, 2]"),
    "state a list": lambda c: open(os.path.join(c, STATE_FILE), "w").write("[]"),
    "state wrong types": lambda c: open(os.path.join(c, STATE_FILE), "w").write('{"completed_steps": "two"}'),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_one_clear_error(damage, finished_run, corpus, cache, tmp_path, capsys):
    out, ckpt = copy_run(finished_run, tmp_path)
    DAMAGE[damage](ckpt)
    before = snapshot(out)
    code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 4, "--resume_from_checkpoint", ckpt), capsys)
    assert code == 2
    one_error_line(err)
    assert snapshot(out) == before


def test_a_binary_latest_pointer_falls_back_to_the_newest_complete_checkpoint(
    finished_run, corpus, cache, tmp_path, capsys, caplog
):
    out, _ = copy_run(finished_run, tmp_path)
    with open(os.path.join(out, "checkpoints", LATEST_FILE), "wb") as f:
        f.write(b"\xff\xfe\x00../../etc")
    code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 3, "--resume_from_checkpoint", "latest"), capsys)
    assert code == 0, err[-2000:]
    assert "not a complete checkpoint" in caplog.text  # said, not silent
    assert json.load(open(os.path.join(out, "all_results.json")))["train_steps"] == 3


# ----------------------------------------------------------------------------------------------------------------
# Resume refuses changed settings, naming them
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, named",
    [
        (["--learning_rate", "1e-3"], "learning_rate"),
        (["--mlm_probability", "0.3"], "mlm_probability"),
        (["--lr_scheduler_type", "cosine"], "lr_scheduler_type"),
        (
            ["--config_overrides", "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,hidden_dropout_prob=0.2"],
            "hidden_dropout_prob",
        ),
        (["--config_overrides", "hidden_size=32,num_hidden_layers=2,num_attention_heads=4"], "model.hidden_size"),
    ],
)
def test_resume_with_changed_settings_is_refused(change, named, finished_run, corpus, cache, tmp_path, capsys):
    out, _ = copy_run(finished_run, tmp_path)
    before = snapshot(out)
    code, err = run_cli(
        argv(corpus, cache, out, "--max_train_steps", 4, "--resume_from_checkpoint", "latest", *change), capsys
    )
    assert code == 2
    assert named in one_error_line(err)
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------------------------------------
# Bad values and overrides: refused up front
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, named",
    [
        (
            ["--config_overrides", "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,vocab_size=10"],
            "vocab_size",
        ),
        (
            ["--config_overrides", "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,type_vocab_size=1"],
            "type_vocab_size",
        ),
        (
            [
                "--config_overrides",
                "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,max_position_embeddings=16",
            ],
            "max_position_embeddings",
        ),
        *BAD_SHARED_VALUES,
        (["--learning_rate", "1e39"], "--learning_rate 1e+39 does not fit in float32"),  # finite in Python only
        (["--adam_epsilon", "1e-50"], "--adam_epsilon 1e-50 rounds to 0 in float32"),
        (["--fill_mask_prompts", "no mask here"], "[MASK]"),
        (["--fill_mask_prompts", "[MASK] and [MASK]"], "[MASK]"),
    ],
)
def test_bad_values_end_in_one_error_line(extra, named, corpus, cache, tmp_path, capsys):
    code, err = run_cli(argv(corpus, cache, tmp_path / "out", "--max_train_steps", 2, *extra), capsys)
    assert code == 2
    assert named in one_error_line(err)
    assert not (tmp_path / "out").exists()  # a refused run leaves nothing


def test_a_run_config_that_is_not_utf8_is_one_error_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"learning_rate: 1e-3\nseed: \xff\xfe\n")
    code, err = run_cli([str(config)], capsys)
    assert code == 2
    assert "UTF-8" in one_error_line(err)


@pytest.mark.parametrize("where", ["file", "proc", "read-only"])
def test_an_output_dir_that_cannot_be_written_is_one_error_line(where, corpus, cache, tmp_path, capsys):
    if where == "file":
        out = tmp_path / "a_file"
        out.write_text("mine")
    elif where == "proc":
        out = "/proc/minibert-out"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o500)
        out = parent / "out"
    code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 2), capsys)
    assert code == 2
    assert "--output_dir" in one_error_line(err)


# ----------------------------------------------------------------------------------------------------------------
# Folders: never over files a run did not write, never before every input is checked
# ----------------------------------------------------------------------------------------------------------------
def test_a_folder_with_someone_elses_model_card_and_config_is_refused(corpus, cache, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    (out / "config.json").write_text('{"mine": true}')
    code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 2), capsys)
    assert code == 2
    assert "no pretraining run wrote" in one_error_line(err)
    assert (out / "README.md").read_text() == "my notes" and (out / "config.json").read_text() == '{"mine": true}'


def test_output_dir_equal_to_the_input_model_is_refused(finished_run, corpus, cache, tmp_path, capsys):
    out, _ = copy_run(finished_run, tmp_path)
    before = snapshot(out)
    extra = ["--model_name_or_path", out, "--overwrite_output_dir", "true", "--max_train_steps", 2]
    code, err = run_cli(args_for(corpus, cache, out, *extra, model=""), capsys)
    assert code == 2
    assert "--model_name_or_path" in one_error_line(err)
    assert snapshot(out) == before


def test_overwrite_with_bad_data_deletes_nothing(finished_run, cache, tmp_path, capsys):
    """--overwrite_output_dir clears the old run only once every input has been checked."""
    out, _ = copy_run(finished_run, tmp_path)
    before = snapshot(out)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, err = run_cli(argv(str(empty), cache, out, "--max_train_steps", 2, "--overwrite_output_dir", "true"), capsys)
    assert code == 2
    one_error_line(err)
    assert snapshot(out) == before


def test_non_finite_weights_are_never_saved_or_exported(corpus, cache, tmp_path, capsys, monkeypatch):
    """Weights that turn NaN after step 2: step 1's checkpoint stays the newest, nothing is exported."""
    from pretrain.loop import PretrainingLoop

    original = PretrainingLoop.train_step

    def poisoned(self, *a, **k):
        out = original(self, *a, **k)
        if self.progress.completed_steps == 1:  # the update of step 2
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(PretrainingLoop, "train_step", poisoned)
    out = tmp_path / "out"
    code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 4, "--checkpointing_steps", 1), capsys)
    assert code == 2
    assert "NaN or inf at step 2" in one_error_line(err)
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_1"]
    assert not (out / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------------------------------
# One writer per output folder
# ----------------------------------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first(corpus, cache, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "started": "now"}))
        code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 2), capsys)
        assert code == 2
        assert f"pid {holder.pid}" in one_error_line(err)
        assert sorted(os.listdir(out)) == [LOCK_FILE]  # the first run's folder untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_message(corpus, cache, tmp_path, capsys, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"}))
    code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 2), capsys)
    assert code == 0, err[-2000:]
    assert f"taking over the lock of pid {dead.pid}" in caplog.text
    assert not (out / LOCK_FILE).exists()  # released at the end


def test_the_lock_is_exclusive_within_one_machine(tmp_path):
    with (
        OutputLock(str(tmp_path / "out")),
        pytest.raises(UserError, match=f"pid {os.getpid()}"),
        OutputLock(str(tmp_path / "out")),
    ):
        pass
    assert not (tmp_path / "out").exists()  # created by the lock, empty, removed with it


# ----------------------------------------------------------------------------------------------------------------
# A full disk during a save
# ----------------------------------------------------------------------------------------------------------------
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(corpus, cache, tmp_path, capsys, monkeypatch):
    """ENOSPC in the middle of the second checkpoint (simulated: a partial file, then the error): one line, no
    `.tmp-` folder left to keep the disk full, `latest` still names step 1, and the retry resumes from it."""
    import errno

    from accelerate import Accelerator

    original, calls = Accelerator.save_state, []

    def full_disk(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            with open(os.path.join(output_dir, "model.safetensors"), "wb") as f:
                f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "model.safetensors"))
        return original(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    out = tmp_path / "out"
    extra = ["--max_train_steps", 3, "--checkpointing_steps", 1]
    code, err = run_cli(argv(corpus, cache, out, *extra), capsys)
    assert code == 2
    assert "no space left" in one_error_line(err)
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_1"]
    assert (out / "checkpoints" / LATEST_FILE).read_text().strip() == "step_1"
    monkeypatch.setattr(Accelerator, "save_state", original)
    code, err = run_cli(argv(corpus, cache, out, *extra, "--resume_from_checkpoint", "latest"), capsys)
    assert code == 0, err[-2000:]
    assert json.load(open(out / "all_results.json"))["train_steps"] == 3


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real, tiny filesystem (tmpfs) that fills up; skipped where mounting is not allowed."""
    mounted = []

    def make(size_bytes: int) -> str:
        path = tmp_path / f"tmpfs{len(mounted)}"
        path.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(path)
        return str(path)

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def test_a_really_full_disk_keeps_the_previous_checkpoint(corpus, cache, tmp_path, capsys, small_tmpfs):
    """The same on a real full filesystem: sized (from a measured first run) to hold the first checkpoint but not
    the second. One line, `latest` names a complete checkpoint, no half-written folder is left."""
    probe = tmp_path / "probe"
    extra = ["--max_train_steps", 2, "--checkpointing_steps", 1, "--checkpoints_total_limit", 5]
    assert run_cli(argv(corpus, cache, probe, *extra), capsys)[0] == 0
    one = sum(f.stat().st_size for f in (probe / "checkpoints" / "step_1").rglob("*") if f.is_file())
    out = os.path.join(small_tmpfs(int(one * 1.6) + 64 * 1024), "out")
    code, err = run_cli(
        argv(corpus, cache, out, "--max_train_steps", 4, "--checkpointing_steps", 1, "--checkpoints_total_limit", 5),
        capsys,
    )
    assert code == 2, err[-2000:]
    assert "no space left" in one_error_line(err).lower()
    checkpoints = os.path.join(out, "checkpoints")
    latest = open(os.path.join(checkpoints, LATEST_FILE)).read().strip()
    assert sorted(n for n in os.listdir(checkpoints) if n.startswith("step_")) == [latest]  # no partial folder
    assert not [n for n in os.listdir(checkpoints) if n.startswith(".")]  # nor a temporary one filling the disk
    complete = {f.name for f in (probe / "checkpoints" / "step_1").rglob("*") if f.is_file()}
    assert complete <= {f.name for f in Path(checkpoints, latest).rglob("*") if f.is_file()}


def test_two_runs_at_once_the_second_refuses_naming_the_first(corpus, cache, tmp_path, capsys):
    """A real first run (a subprocess, training) and a second one on the same output_dir."""
    import signal
    import time

    out = tmp_path / "out"
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        [sys.executable, "-m", "pretrain", *argv(corpus, cache, out, "--max_train_steps", 100000)],
        env=cli_env(),
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 180
        while not (out / "metrics.jsonl").exists():  # the first run is training
            assert first.poll() is None, open(tmp_path / "first.log").read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        code, err = run_cli(argv(corpus, cache, out, "--max_train_steps", 2, "--overwrite_output_dir", "true"), capsys)
        assert code == 2
        assert f"pid {first.pid}" in one_error_line(err)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(120)
        log.close()
    assert first.returncode == 128 + signal.SIGTERM  # the first run was not disturbed: it checkpointed and stopped
    assert not (out / LOCK_FILE).exists()


def test_a_model_whose_config_is_a_json_list_is_one_error_line(corpus, cache, tmp_path, capsys):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text("[]")
    code, err = run_cli(
        args_for(corpus, cache, tmp_path / "out", "--model_name_or_path", bad, "--max_train_steps", 1, model=""), capsys
    )
    assert code == 2
    assert "config.json holds a JSON list" in one_error_line(err)


@pytest.mark.parametrize("where", ["file", "proc"])
def test_a_data_cache_that_cannot_be_written_is_one_error_line(where, corpus, tmp_path, capsys):
    cache = "/proc/minibert-cache"
    if where == "file":
        cache = str(tmp_path / "a_file")
        open(cache, "w").write("mine")
    code, err = run_cli(argv(corpus, cache, tmp_path / "out", "--max_train_steps", 1), capsys)
    assert code == 2
    assert "--data_cache_dir" in one_error_line(err)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# Memory stays flat
# ----------------------------------------------------------------------------------------------------------------
def _anonymous_memory_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc/self/status")
def test_memory_stays_flat_over_many_steps(corpus, cache, tmp_path, monkeypatch):
    """2,000 tiny steps with logging, evaluation and checkpoints on the way: after warm-up the process's anonymous
    memory stays within a small bound (a newcomer once saw 645 MB grow to 1.6 GB in 300 demo steps; at 100,000
    steps a leak ends the run)."""
    from pretrain.loop import PretrainingLoop

    samples: dict[int, float] = {}
    original = PretrainingLoop._after_step

    def sampling(self, *a, **k):
        original(self, *a, **k)
        if self.progress.completed_steps % 100 == 0:
            samples[self.progress.completed_steps] = _anonymous_memory_mb()

    monkeypatch.setattr(PretrainingLoop, "_after_step", sampling)
    extra = [
        "--max_train_steps",
        2000,
        "--logging_steps",
        10,
        "--eval_steps",
        250,
        "--checkpointing_steps",
        500,
        "--checkpoints_total_limit",
        2,
    ]
    model = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64"
    assert main([str(a) for a in args_for(corpus, cache, tmp_path / "out", *extra, model=model)]) == 0
    warm = samples[300]
    growth = max(samples[s] for s in samples if s > 300) - warm
    print(f"anonymous memory after warm-up: {warm:.0f} MB, growth {growth:.1f} MB")
    assert growth < 40, f"anonymous memory grew by {growth:.0f} MB after warm-up: {samples}"


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--vocab_size", str(2**40)], "--vocab_size"),
        (["--dupe_factor", str(2**40)], "--dupe_factor"),
        (["--max_seq_length", str(2**40)], "--max_seq_length"),
    ],
)
def test_sizes_that_would_abort_or_fill_memory_are_refused(extra, named, corpus, cache, tmp_path, capsys):
    """Found by fuzzing: `tokenizers` aborts the process on a vocabulary of 2**31, and a dupe factor of 2**40
    pairs for hours until memory runs out."""
    code, err = run_cli(argv(corpus, cache, tmp_path / "out", "--max_train_steps", 1, *extra), capsys)
    assert code == 2
    assert named in one_error_line(err)


def test_a_model_too_large_for_memory_is_one_error_line(corpus, cache, tmp_path, capsys):
    overrides = "hidden_size=64,num_hidden_layers=1,num_attention_heads=4,intermediate_size=1099511627776"
    code, err = run_cli(
        argv(corpus, cache, tmp_path / "out", "--max_train_steps", 1, "--config_overrides", overrides), capsys
    )
    assert code == 2
    assert "out of memory" in one_error_line(err)


def test_deleting_the_data_cache_mid_run_never_gives_wrong_data(corpus, tmp_path, capsys, monkeypatch):
    """The cache folder removed after the first step: the run goes on from the memory-mapped data it opened and ends
    with the weights of an undisturbed run (never other data); the next run rebuilds the cache."""
    from safetensors.torch import load_file

    from pretrain.loop import PretrainingLoop

    extra = ["--max_train_steps", 15]  # past the end of the first epoch (12 steps): the data is read again
    undisturbed = tmp_path / "undisturbed"
    assert run_cli(argv(corpus, str(tmp_path / "cache_a"), undisturbed, *extra), capsys)[0] == 0
    assert json.load(open(undisturbed / "all_results.json"))["train_epochs"] > 1

    cache = tmp_path / "cache_b"
    original, steps = PretrainingLoop.train_step, []

    def step_then_delete(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 1:
            shutil.rmtree(cache)
        return result

    monkeypatch.setattr(PretrainingLoop, "train_step", step_then_delete)
    code, err = run_cli(argv(corpus, str(cache), tmp_path / "disturbed", *extra), capsys)
    assert code == 0, err[-3000:]
    assert not cache.exists() and len(steps) == 15
    a, b = load_file(undisturbed / "model.safetensors"), load_file(tmp_path / "disturbed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    monkeypatch.setattr(PretrainingLoop, "train_step", original)
    assert run_cli(argv(corpus, str(cache), tmp_path / "again", *extra), capsys)[0] == 0  # rebuilt
    assert cache.exists()


def test_a_gpu_launch_config_on_a_machine_without_gpus_is_one_line_at_start(tmp_path, capsys, monkeypatch):
    """What `accelerate launch --config_file multi_gpu_8.yaml` sets in each process, on a CPU-only machine."""
    import torch.distributed as dist

    from pretrain.distributed import make_accelerator

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("WORLD_SIZE", str(4 * cores))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cores))
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("no process group may be formed"))
    from pretrain.args import PretrainingArguments

    with pytest.raises(UserError, match="no GPU.*cpu_2proc.yaml"):
        make_accelerator(PretrainingArguments(output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# What the flags and inputs decide is refused before step 1, nothing written (issue #21 items 1, 5, 6)
# ----------------------------------------------------------------------------------------------------------------
def _no_training_began(caplog, out, before) -> None:
    """No training log line (the plan line comes before step 1), and the folder as it was."""
    assert "pretraining on" not in caplog.text and "step 1" not in caplog.text
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "extra, model",
    [
        (["--recipe", "fast"], None),
        ([], "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,pre_layer_norm=true"),
    ],
    ids=["recipe fast", "pre_layer_norm"],
)
def test_export_bert_of_a_model_that_is_not_a_bert_is_refused_before_step_1(
    extra, model, finished_run, corpus, cache, tmp_path, capsys, caplog
):
    """Once: the whole run trained, wrote its model, then exit 2 ("this model is not a BERT"). Now refused before
    the data is even read (a fresh data cache stays unmade)."""
    out, _ = copy_run(finished_run, tmp_path)
    before = snapshot(out)
    fresh_cache = tmp_path / "cache"
    flags = [*extra, "--export_bert", "true", "--overwrite_output_dir", "true", "--max_train_steps", 2]
    code, err = run_cli(args_for(corpus, fresh_cache, out, *flags, **({"model": model} if model else {})), capsys)
    assert code == 2
    assert "--export_bert: this model is not a BERT (pre_layer_norm=True" in one_error_line(err)
    _no_training_began(caplog, out, before)
    assert not fresh_cache.exists()


def test_export_bert_of_a_bert_checkpoint_goes_ahead_as_planned(finished_run):
    """The early check reads the architecture the model will have: a BERT checkpoint with a harmless override is one;
    a BERT checkpoint made pre-LN by an override is not."""
    from minibert.checks import check_bert_export
    from pretrain.args import ModelArguments
    from pretrain.train import planned_architecture

    check_bert_export(planned_architecture(ModelArguments(model_name_or_path=finished_run)))
    check_bert_export(planned_architecture(ModelArguments(config_overrides="hidden_dropout_prob=0,mlp_bias=true")))
    with pytest.raises(UserError, match="attention_bias=False"):
        check_bert_export(planned_architecture(ModelArguments(finished_run, config_overrides="attention_bias=false")))


def _model_folder(finished_run, folder, keep_tokenizer: bool) -> str:
    """The finished run's model files, with or without its tokenizer files."""
    from minibert.checks import TOKENIZER_FILES

    folder.mkdir()
    for name in os.listdir(finished_run):
        tokenizer_file = name in TOKENIZER_FILES or name.startswith(("tokenizer", "special_tokens"))
        if os.path.isfile(os.path.join(finished_run, name)) and (keep_tokenizer or not tokenizer_file):
            shutil.copy(os.path.join(finished_run, name), folder / name)
    return str(folder)


def test_a_model_folder_without_tokenizer_files_is_refused_before_the_data(
    finished_run, corpus, cache, tmp_path, capsys, caplog
):
    """Once: AutoTokenizer built a 5-token tokenizer from config.json, the run trained on [UNK]s and shipped it."""
    bare = _model_folder(finished_run, tmp_path / "bare", keep_tokenizer=False)
    out = tmp_path / "out"
    code, err = run_cli(
        args_for(corpus, cache, out, "--model_name_or_path", bare, "--max_train_steps", 2, model=""), capsys
    )
    assert code == 2
    line = one_error_line(err)
    assert f"--model_name_or_path {bare} holds no tokenizer" in line and "--tokenizer_name" in line
    assert not out.exists()
    assert "pretraining on" not in caplog.text


def test_a_tokenizer_folder_without_a_tokenizer_is_one_whole_message(corpus, cache, tmp_path, capsys):
    """Once: the message was cut at "from one of:"."""
    empty = tmp_path / "tok"
    empty.mkdir()
    (empty / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    code, err = run_cli(
        argv(corpus, cache, tmp_path / "out", "--tokenizer_name", empty, "--max_train_steps", 2), capsys
    )
    assert code == 2
    line = one_error_line(err)
    assert f"--tokenizer_name {empty} holds no tokenizer (none of tokenizer.json, vocab.txt" in line
    assert "from one of" not in line
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_does_not_fit_the_checkpoint_is_refused_before_step_1(
    finished_run, corpus, cache, tmp_path, capsys, caplog
):
    """A tokenizer of the special tokens alone beside a checkpoint of 120 embeddings: every word would be [UNK]."""
    from transformers import BertTokenizerFast

    model = _model_folder(finished_run, tmp_path / "model", keep_tokenizer=True)
    specials = tmp_path / "specials"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(specials)
    out = tmp_path / "out"
    extra = ["--model_name_or_path", model, "--tokenizer_name", specials, "--max_train_steps", 2]
    code, err = run_cli(args_for(corpus, cache, out, *extra, model=""), capsys)
    assert code == 2
    assert "holds only its 5 special tokens" in one_error_line(err)
    assert not out.exists()
    assert "pretraining on" not in caplog.text


@pytest.mark.parametrize("kind", ["/dev/null", "fifo"])
def test_a_train_file_that_is_a_special_file_is_named_as_such(kind, cache, tmp_path, capsys):
    """Once: "train file not found" (and a named pipe would block the reader)."""
    path = "/dev/null" if kind == "/dev/null" else str(tmp_path / "corpus.txt")
    if kind == "fifo":
        os.mkfifo(path)
    code, err = run_cli(argv(path, cache, tmp_path / "out", "--max_train_steps", 2), capsys)
    assert code == 2
    named = "is a character device" if kind == "/dev/null" else "is a named pipe (FIFO)"
    assert f"--train_file {path} {named}, not a data file" in one_error_line(err)
    assert not (tmp_path / "out").exists()
