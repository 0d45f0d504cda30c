"""What keeps a run from doing damage, shared by `minibert-pretrain`, `minibert-finetune` and `minibert-convert`.

- `load_tensor_file`: the only way a pickle-format checkpoint file (`.bin`, `.pkl`, `.pt`) is read: `torch.load`
  restricted to tensors, containers, numbers and numpy arrays (`weights_only=True` with accelerate's allow-list).
  A file that holds anything else is refused before any of its objects is built, so a crafted checkpoint cannot
  run code; a damaged one is named. Either way a `UserError`.
- `OutputLock`: one writer per output folder (a lock file holding the pid and host); a lock left by a run that
  is no longer alive is taken over, with a message.
- `check_output_dir`: an output folder is new, empty, or an earlier run of the same CLI, and never its input model;
  `check_previous_run`: that earlier run is continued (a resume), replaced (--overwrite_output_dir) or refused.
- `check_writable_dir`: an output / cache / destination folder is a directory this process can write (not a file,
  not a read-only filesystem, not /proc), checked before anything is written.
- `disk_full_cause` / `is_disk_full`: whether an error, or a cause of it, says the disk is full (however the
  writer says it), for the checkpoint writers and the data cache.
- `non_finite_parameters`: the weights that are not finite (checked before saving).
- `StopRequest`: SIGTERM / SIGINT as a flag the training loops read at a step boundary.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import signal
import socket
import tempfile
import time
from collections.abc import Callable

from .cli import UserError, one_line


def write_atomically(path: str, text: str) -> None:
    """`text` at `path`, atomically: written to a temporary file in the same folder, flushed to disk, then renamed
    into place, so a reader (or a crash) sees the old file or the new one, whole."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, data, *, sort_keys: bool = False) -> None:
    """`data` as JSON at `path`, atomically (`write_atomically`): the one JSON writer of the CLIs, caches and
    checkpoints; values JSON lacks are written as their `str`."""
    write_atomically(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


logger = logging.getLogger(__name__)

LOCK_FILE = ".minibert.lock"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


# --------------------------------------------------------------------------------------------------------------
# Pickle-format files
# --------------------------------------------------------------------------------------------------------------
def _allowed_globals() -> list:
    """What a training-state file may reference besides tensors: numpy arrays (RNG states), as accelerate allows."""
    try:
        from accelerate.utils.other import TORCH_SAFE_GLOBALS

        return list(TORCH_SAFE_GLOBALS)
    except ImportError:  # accelerate moved it: numpy arrays only
        import numpy as np

        core = np._core if hasattr(np, "_core") else np.core
        return [core.multiarray._reconstruct, np.ndarray, np.dtype]


def load_tensor_file(path: str, map_location="cpu"):
    """`torch.load(path)` that never builds an object outside the allow-list; every failure is a `UserError`."""
    import torch

    if not os.path.isfile(path):
        raise UserError(f"{path} is missing")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = one_line(e).split("WeightsUnpickler error:")[-1].strip().split(". ")[0]
        raise UserError(
            f"{path} holds Python objects other than tensors and plain values ({detail}); it was refused unread, "
            "since loading it could run code. A checkpoint written by minibert never holds such objects: do not "
            "use this one unless you know where it came from, and resume from a checkpoint you wrote yourself"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError) as e:
        raise UserError(f"{path} is damaged or truncated ({one_line(e)[:200]}); use an earlier checkpoint") from None


def read_json_object(path: str, advice: str | None = None) -> dict:
    """The JSON object in `path`. A file that cannot be read, is not JSON or holds another JSON value is a
    `UserError` that names it, ending with `advice` (e.g. "use an earlier checkpoint") when given."""
    end = f"; {advice}" if advice else ""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise UserError(f"cannot read {path} ({one_line(e)[:200]}){end}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds a JSON {type(value).__name__}, not an object{end}")
    return value


def read_json_dict(path: str) -> dict | None:
    """The JSON object in `path`; None when it is missing, unreadable, half-written or not an object."""
    try:
        return read_json_object(path)
    except UserError:
        return None


# --------------------------------------------------------------------------------------------------------------
# Output folders
# --------------------------------------------------------------------------------------------------------------
def check_writable_dir(path: str, flag: str) -> None:
    """Refuse `path` (for `flag`) unless it is, or can be created as, a directory this process can write.

    Creates and leaves nothing: an existing folder is probed with a temporary file of this process's own; for a
    missing one, the nearest existing parent must let this process create folders. (Creating and removing the
    missing folder instead would race with the other processes of a launch checking the same path.)"""
    if not path:
        raise UserError(f"{flag} must not be empty")
    real = os.path.realpath(os.path.expanduser(path))
    top = "/" + real.split("/")[1]
    if top in ("/proc", "/sys", "/dev"):
        raise UserError(f"{flag} {path} is under {top}, not a place for files")
    if os.path.exists(real) and not os.path.isdir(real):
        raise UserError(f"{flag} {path} is a file; give a directory (it is created if missing)")
    probe = real
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"{flag} {path}: {probe} is a file, so the folder cannot be created")
    if probe != real:
        if not os.access(probe, os.W_OK | os.X_OK):  # also False on a read-only filesystem, for root too
            raise UserError(f"{flag} {path} cannot be created: {probe} is not writable; choose another folder")
        return
    try:
        fd, name = tempfile.mkstemp(prefix=".write-test-", dir=real)
        os.close(fd)
        os.remove(name)
    except OSError as e:
        raise UserError(
            f"{flag} {path} cannot be written ({e.strerror or one_line(e)}); choose another folder"
        ) from None


RUN_MARKER = ".minibert-run.json"


def check_output_dir(
    output_dir: str,
    cli: str,
    our_files: set[str],
    evidence: set[str],
    flag: str = "--output_dir",
    source: str | None = None,
    source_flag: str = "--model_name_or_path",
    inspect: Callable[[str], None] | None = None,
) -> None:
    """Refuse a non-empty `output_dir` that a `cli` run did not write, or that is the run's input model `source`.

    Ours: a folder holding only names in `our_files` (dot-files aside), marked by `mark_output_dir` as `cli`'s, or
    (written before the marker existed) holding one of `evidence` (a run's checkpoints or results). A user's own
    README.md and config.json alone are not ours. `inspect(output_dir)`, when given, runs on an existing folder
    before those rules: a CLI's own, more telling refusal (fine-tuning's: a config.json that is not a classifier's)."""
    check_writable_dir(output_dir, flag)
    if not os.path.isdir(output_dir):
        return
    if source and os.path.isdir(source) and os.path.samefile(source, output_dir):
        raise UserError(f"{flag} {output_dir} is the checkpoint given as {source_flag}; write the result elsewhere")
    if inspect is not None:
        inspect(output_dir)
    names = sorted(n for n in os.listdir(output_dir) if not n.startswith("."))
    if not names:
        return
    foreign = [n for n in names if n not in our_files]
    if foreign:
        raise UserError(
            f"{flag} {output_dir} already holds files that a {cli} run does not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); choose a new or empty folder"
        )
    marker = read_marker(output_dir)
    if marker is not None and marker.get("cli") != cli:
        raise UserError(
            f"{flag} {output_dir} holds a {marker.get('cli')} run, not a {cli} one; choose a new or empty folder"
        )
    if marker is None and not set(names) & evidence:
        raise UserError(
            f"{flag} {output_dir} already holds {', '.join(names[:5])}, which no {cli} run wrote; choose a new or "
            "empty folder"
        )


def read_marker(output_dir: str) -> dict | None:
    return read_json_dict(os.path.join(output_dir, RUN_MARKER))


def mark_output_dir(output_dir: str, cli: str) -> None:
    """Record that `cli` writes into `output_dir` (what `check_output_dir` accepts later)."""
    if read_marker(output_dir) is None:
        write_json(os.path.join(output_dir, RUN_MARKER), {"cli": cli})


def check_previous_run(
    output_dir: str, cli: str, found: list[str], resuming: bool, overwrite: bool, resume_keyword: str
) -> bool:
    """An earlier `cli` run in `output_dir` (`found`: what of it is there; empty when none) is continued by a resume,
    replaced when asked (--overwrite_output_dir: returns True, and the caller clears it once every input has been
    checked), and otherwise refused, naming it and both ways on. `resume_keyword`: the CLI's word for its newest
    checkpoint."""
    if resuming or not found:
        return False
    if overwrite:
        return True
    raise UserError(
        f"--output_dir {output_dir} already holds a {cli} run ({', '.join(found)}): pass --resume_from_checkpoint "
        f"{resume_keyword} to continue it, or --overwrite_output_dir to replace it (or choose another folder)"
    )


class OutputLock:
    """One writer per output folder: `LOCK_FILE` holds the writer's pid and host while it runs.

    A second run on the same folder is refused with the first one's pid; a lock whose pid is no longer alive on
    this host (a killed run) is taken over, with a warning. A lock from another host cannot be checked: it is
    refused with the file to delete if that run is over. Use as a context manager; only one process of a
    multi-process run takes it (`enabled=False` on the others).
    """

    def __init__(self, folder: str, flag: str = "--output_dir", enabled: bool = True):
        self.folder = folder
        self.flag = flag
        self.enabled = enabled
        self.path = os.path.join(folder, LOCK_FILE)
        self._created_folder = False
        self._held = False

    def __enter__(self) -> OutputLock:
        if not self.enabled:
            return self
        self._created_folder = not os.path.exists(self.folder)
        check_writable_dir(self.folder, self.flag)
        os.makedirs(self.folder, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self._held = True
            return self
        raise UserError(f"{self.flag} {self.folder}: could not take the lock {self.path}; retry")

    def _take_over_if_stale(self) -> None:
        holder = read_lock(self.path)
        if holder is None:  # being written this instant, or emptied by a crash at that instant
            try:
                age = time.time() - os.path.getmtime(self.path)
            except FileNotFoundError:
                return
            if age < 5:
                time.sleep(0.2)
                holder = read_lock(self.path)
                if holder is None and os.path.exists(self.path):
                    raise UserError(
                        f"{self.flag} {self.folder} is being taken by another run ({self.path}); retry later"
                    )
                if holder is None:
                    return
        if holder is not None:
            pid, host = holder.get("pid"), holder.get("host")
            if host != socket.gethostname():
                raise UserError(
                    f"{self.flag} {self.folder} is in use by pid {pid} on {host} (since {holder.get('started')}): "
                    f"wait for that run or choose another folder; if it is no longer running, delete {self.path}"
                )
            if pid_alive(pid):
                raise UserError(
                    f"{self.flag} {self.folder} is in use by another run (pid {pid}, since {holder.get('started')}): "
                    "wait for it to finish or choose another folder"
                )
            logger.warning("%s: taking over the lock of pid %s, which is no longer running", self.folder, pid)
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def __exit__(self, *exc) -> None:
        if not self._held:
            return
        self._held = False
        holder = read_lock(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        if self._created_folder:  # a run that wrote nothing leaves nothing behind
            try:
                if os.listdir(self.folder) == [RUN_MARKER]:
                    os.remove(os.path.join(self.folder, RUN_MARKER))
                os.rmdir(self.folder)
            except OSError:
                pass


def read_lock(path: str) -> dict | None:
    data = read_json_dict(path)
    return data if data is not None and isinstance(data.get("pid"), int) else None


def pid_alive(pid) -> bool:
    """Whether `pid` names a live process on this host (someone else's counts); False for anything not a pid."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


# --------------------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------------------
def disk_full_cause(error: BaseException, folder: str | None = None) -> BaseException | None:
    """The exception that says the disk is full: `error` or one of its causes (`datasets` wraps what fails while it
    generates); None when there is none. Recognised: ENOSPC / EDQUOT, a message saying so without an errno
    (`datasets`' own check before it writes: "Not enough disk space"), and, given the `folder` being written, what
    torch's writers say when a write came up short (seen on a full tmpfs: a RuntimeError naming no errno), when that
    folder's disk has less than 64 MiB free."""
    import shutil

    short_write = ("failed writing", "iostream error", "unexpected pos", "file write failed")
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        text = str(error).lower()
        if "not enough disk space" in text or "no space left" in text or "disk quota" in text:
            return error
        if folder is not None and any(s in text for s in short_write):
            try:
                if shutil.disk_usage(folder).free < 64 * 2**20:
                    return error
            except OSError:
                pass
        error = error.__cause__ or error.__context__
    return None


def is_disk_full(error: BaseException, folder: str) -> bool:
    """Whether `error` (or a cause of it) says the disk holding `folder` is full (`disk_full_cause`)."""
    return disk_full_cause(error, folder) is not None


def non_finite_parameters(model) -> list[str]:
    """Names of the parameters and buffers of `model` holding a NaN or an infinity (floating tensors only)."""
    import torch

    bad = []
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    return bad


class StopRequest:
    """SIGTERM / SIGINT (a preempted job, Ctrl-C) as a flag the loop reads at the next step boundary.

    The loop then saves a checkpoint and returns; `minibert-pretrain` and `minibert-finetune` exit with 128 + the
    signal number (143 for SIGTERM, 130 for SIGINT), so a scheduler sees the job did not finish, and the same
    command with `--resume_from_checkpoint latest` (`last` for fine-tuning) continues it. A second signal restores
    the default handler (a second Ctrl-C kills at once; the last complete checkpoint stays valid).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        self.signum = signum
        logger.warning("received %s: saving a checkpoint at the next step boundary", signal.Signals(signum).name)
        for s in self.SIGNALS:
            signal.signal(s, self._previous.get(s, signal.SIG_DFL))

    def __enter__(self) -> StopRequest:
        for s in self.SIGNALS:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None
