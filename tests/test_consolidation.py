"""What `pretrain/`, `finetune/` and `minibert/` decide in one place (`minibert.safety`), checked from each caller:
whether a process is alive (the output lock, the data cache's work directories), whether an error is a full disk
(checkpoint writers, the data cache).

The oracles: real processes (one that has exited, this one), real errors as the writers raise them.
"""

import os
import socket
import subprocess
import sys

from minibert.safety import pid_alive
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
