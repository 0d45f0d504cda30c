"""What `pretrain/`, `finetune/` and `minibert/` decide in one place (`minibert.safety`), checked from each caller:
whether a process is alive (the output lock, the data cache's work directories), whether an error is a full disk
(checkpoint writers, the data cache), what becomes of an earlier run in the output folder (both training CLIs; their
end-to-end cases are in test_finetune_train.py, test_pretrain_loop.py and test_reliability_*.py).

The oracles: real processes (one that has exited, this one), real errors as the writers raise them.
"""

import errno
import os
import shutil
import socket
import subprocess
import sys
from collections import namedtuple

import pytest

from minibert.cli import UserError
from minibert.safety import check_previous_run, disk_full_cause, is_disk_full, pid_alive
from pretrain import data
from pretrain.cache import DataCache


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_pid_alive_knows_a_live_and_an_exited_process_and_refuses_what_is_no_pid():
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # init: someone else's live process (PermissionError when not root)
    assert not pid_alive(_dead_pid())
    for not_a_pid in (None, "123", 0, -1, 1.0):
        assert not pid_alive(not_a_pid)


def test_the_data_cache_removes_the_work_directories_of_exited_runs_only(tmp_path):
    """A killed run's `tmp-<host>-<pid>-*` goes when the next run opens the cache; a live run's, another host's
    (its pid means nothing here) and a published entry stay."""
    host, dead = socket.gethostname(), _dead_pid()
    names = {
        "killed": f"tmp-{host}-{dead}-abc",
        "live": f"tmp-{host}-{os.getpid()}-abc",
        "other host": f"tmp-elsewhere-{dead}-abc",
        "entry": "tokens-0123456789abcdef",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    DataCache(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(n for k, n in names.items() if k != "killed")
    (tmp_path / names["killed"]).mkdir()
    DataCache(str(tmp_path), read_only=True)  # a read-only cache removes nothing
    assert sorted(os.listdir(tmp_path)) == sorted(names.values())


def _raised(error: BaseException, wrapper: type | None = None, explicit: bool = True) -> BaseException:
    """`error` as raised, or wrapped by `wrapper` (`raise ... from` when `explicit`, else raised while handling)."""
    try:
        try:
            raise error
        except BaseException as inner:
            if wrapper is None:
                raise
            if explicit:
                raise wrapper("generating the dataset failed") from inner
            raise wrapper("generating the dataset failed")  # noqa: B904 (the implicit context is the case tested)
    except BaseException as outer:
        return outer


ENOSPC = OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors")
EDQUOT = OSError(errno.EDQUOT, "Disk quota exceeded")
DATASETS_FULL = OSError("Not enough disk space. Needed: 0 bytes (download: ...), available: 1.2 MB")  # no errno


@pytest.mark.parametrize(
    "error, full",
    [
        (_raised(ENOSPC), ENOSPC),
        (_raised(EDQUOT), EDQUOT),
        (_raised(ENOSPC, RuntimeError), ENOSPC),  # datasets' DatasetGenerationError wraps it
        (_raised(ENOSPC, RuntimeError, explicit=False), ENOSPC),
        (_raised(DATASETS_FULL), DATASETS_FULL),
        (_raised(DATASETS_FULL, RuntimeError), DATASETS_FULL),
        (_raised(OSError(errno.EACCES, "Permission denied")), None),
        (_raised(ValueError("bad value"), RuntimeError), None),
    ],
)
def test_one_full_disk_check_for_checkpoints_and_the_data_cache(error, full, tmp_path):
    """The same answer for both callers: the data cache (`pretrain.data`'s `disk_full_cause`, the error for its
    message) and the checkpoint writers (`is_disk_full`): an errno, or a message without one, on the error or
    any of its causes."""
    assert data.disk_full_cause is disk_full_cause
    assert disk_full_cause(error) is full
    assert is_disk_full(error, str(tmp_path)) is (full is not None)


@pytest.mark.parametrize(
    "message",
    [
        "unexpected pos 64 vs 0",
        "basic_ios::clear: iostream error",
        "PytorchStreamWriter failed writing file data/0: file write failed",
    ],
)
def test_a_short_write_is_a_full_disk_only_when_the_folder_has_no_space(message, monkeypatch, tmp_path):
    """What torch's writers raise on a really full tmpfs (a RuntimeError without an errno, also when wrapped):
    a full disk when the folder being written has under 64 MiB free, not otherwise, and not without a folder."""
    usage = namedtuple("usage", "total used free")
    error = _raised(RuntimeError(message), RuntimeError)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(2**30, 2**30 - 2**20, 2**20))
    assert is_disk_full(error, str(tmp_path))
    assert disk_full_cause(error, str(tmp_path)) is error.__cause__
    assert disk_full_cause(error) is None
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(2**40, 2**30, 2**40 - 2**30))
    assert not is_disk_full(error, str(tmp_path))

    def gone(folder):
        raise FileNotFoundError(folder)

    monkeypatch.setattr(shutil, "disk_usage", gone)  # the folder's free space cannot be known: not said to be full
    assert not is_disk_full(error, str(tmp_path / "gone"))


@pytest.mark.parametrize("cli, keyword", [("fine-tuning", "last"), ("pretraining", "latest")])
def test_an_earlier_run_is_continued_replaced_or_refused_by_one_rule(cli, keyword):
    """A resume continues it, --overwrite_output_dir replaces it (the caller clears it later: True), nothing to
    continue needs neither; otherwise the refusal names the run, what of it is there, and both ways on."""
    found = ["checkpoints/step_2", "all_results.json"]
    for resuming, overwrite in ((True, False), (True, True)):
        assert (
            check_previous_run("out", cli, found, resuming=resuming, overwrite=overwrite, resume_keyword=keyword)
            is False
        )
    assert check_previous_run("out", cli, [], resuming=False, overwrite=True, resume_keyword=keyword) is False
    assert check_previous_run("out", cli, [], resuming=False, overwrite=False, resume_keyword=keyword) is False
    assert check_previous_run("out", cli, found, resuming=False, overwrite=True, resume_keyword=keyword) is True
    with pytest.raises(UserError) as refused:
        check_previous_run("out", cli, found, resuming=False, overwrite=False, resume_keyword=keyword)
    assert str(refused.value) == (
        f"--output_dir out already holds a {cli} run (checkpoints/step_2, all_results.json): pass "
        f"--resume_from_checkpoint {keyword} to continue it, or --overwrite_output_dir to replace it (or choose "
        "another folder)"
    )
