"""Resumable training state: atomic checkpoints, the `latest` pointer, rotation, and stopping on a signal.

Layout of `output_dir/checkpoints/`:

    step_200/              accelerator.save_state (model, optimizer, LR schedule, RNG states, grad scaler)
        trainer_state.json the position in the data and the run's shape (`Progress`), written by us (#3242)
    step_400/
    latest                 one line: the name of the newest complete checkpoint, replaced last

A checkpoint is written into `.tmp-step_N` and renamed into place only when complete, then `latest` is replaced
(write + fsync + os.replace). A crash at any moment leaves `latest` naming a complete checkpoint.
The resume position is read from trainer_state.json, never parsed from a folder name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from dataclasses import asdict, dataclass, fields

from minibert.cli import UserError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
TMP_PREFIX = ".tmp-"


@dataclass
class Progress:
    """Where a run stands, and the shape of the run that wrote it (checked on resume)."""

    completed_steps: int = 0  # optimizer updates applied (skipped non-finite steps count: the data moved on)
    epoch: int = 0  # the epoch the next step reads from
    step_in_epoch: int = 0  # optimizer steps already taken in that epoch
    tokens_seen: int = 0  # non-padding tokens trained on, all processes
    samples_seen: int = 0  # sequences trained on, all processes
    train_runtime: float = 0.0  # seconds spent in training steps, all sessions (excludes eval and checkpoints)
    num_processes: int = 1
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 0
    seed: int = 0

    @property
    def global_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.num_processes * self.gradient_accumulation_steps

    @classmethod
    def read(cls, checkpoint_dir: str) -> "Progress":
        path = os.path.join(checkpoint_dir, STATE_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{checkpoint_dir} is not a complete checkpoint ({STATE_FILE}: {e})") from None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, checkpoint_dir: str) -> None:
        _write_atomically(os.path.join(checkpoint_dir, STATE_FILE), json.dumps(asdict(self), indent=2) + "\n")


def _write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoints_root(output_dir: str) -> str:
    return os.path.join(output_dir, CHECKPOINTS_DIR)


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """Complete checkpoints under `root` as (completed_steps, path), oldest first (steps read from their JSON)."""
    found = []
    if not os.path.isdir(root):
        return found
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(TMP_PREFIX) or not os.path.isfile(os.path.join(path, STATE_FILE)):
            continue
        try:
            found.append((Progress.read(path).completed_steps, path))
        except UserError:
            continue
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str | None:
    """The checkpoint `latest` names; if that pointer is missing or stale, the newest complete one; else None."""
    root = checkpoints_root(output_dir)
    pointer = os.path.join(root, LATEST_FILE)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(root, name)
        if name and os.path.isfile(os.path.join(path, STATE_FILE)):
            return path
        logger.warning("%s names %r, which is not a complete checkpoint; looking for the newest one", pointer, name)
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def resolve_resume(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """--resume_from_checkpoint as a checkpoint folder, or None for a fresh start."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        path = latest_checkpoint(output_dir)
        if path is None:
            logger.info("--resume_from_checkpoint latest: no checkpoint in %s yet, starting from scratch", output_dir)
        return path
    path = resume_from_checkpoint
    if not os.path.isdir(path):
        raise UserError(f"--resume_from_checkpoint: {path} does not exist")
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return path
    # A run's output_dir or its checkpoints/ folder: take its newest checkpoint.
    for run_dir in (path, os.path.dirname(os.path.normpath(path))):
        if os.path.isdir(checkpoints_root(run_dir)):
            found = latest_checkpoint(run_dir)
            if found:
                return found
    raise UserError(f"--resume_from_checkpoint: {path} holds no checkpoint ({STATE_FILE} missing)")


def check_compatible(progress: Progress, current: Progress, path: str) -> None:
    """Refuse a resume that cannot continue the same run exactly."""
    if progress.num_processes != current.num_processes:
        raise UserError(
            f"{path} was written by {progress.num_processes} process(es), this run has {current.num_processes}: "
            "resume with the same number of processes (RNG and optimizer states are per process)"
        )
    if (progress.per_device_train_batch_size, progress.gradient_accumulation_steps) != (
        current.per_device_train_batch_size,
        current.gradient_accumulation_steps,
    ):
        raise UserError(
            f"{path} was trained with per_device_train_batch_size={progress.per_device_train_batch_size} and "
            f"gradient_accumulation_steps={progress.gradient_accumulation_steps}; resume with the same values "
            "(the position in the data is counted in those batches)"
        )
    if progress.seed != current.seed:
        logger.warning("resuming a run started with --seed %d under --seed %d: the data order changes", progress.seed, current.seed)


def save_checkpoint_state(accelerator, output_dir: str, progress: Progress, total_limit: int | None) -> str:
    """Save the full training state as `checkpoints/step_N`, atomically; every process must call this."""
    root = checkpoints_root(output_dir)
    name = f"step_{progress.completed_steps}"
    final, tmp = os.path.join(root, name), os.path.join(root, TMP_PREFIX + name)
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)  # every process writes its part (its RNG state; shards under FSDP / DeepSpeed)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        progress.write(tmp)
        if os.path.exists(final):  # the same step saved before (e.g. a resumed run ending where it began)
            old = os.path.join(root, TMP_PREFIX + name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _write_atomically(os.path.join(root, LATEST_FILE), name + "\n")
        if total_limit is not None:
            rotate_checkpoints(root, keep=total_limit, protect=final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(root: str, keep: int, protect: str) -> None:
    """Delete the oldest complete checkpoints beyond `keep` (never `protect`, the one `latest` names)."""
    found = [path for _, path in list_checkpoints(root)]
    for path in found[: max(0, len(found) - keep)]:
        if os.path.abspath(path) != os.path.abspath(protect):
            shutil.rmtree(path, ignore_errors=True)


class StopRequest:
    """SIGTERM / SIGINT (a preempted job, Ctrl-C) as a flag the loop reads at the next step boundary.

    The loop then saves a checkpoint and returns; `minibert-pretrain` exits with 128 + the signal number
    (143 for SIGTERM, 130 for SIGINT), so a scheduler sees the job did not finish, and the same command with
    `--resume_from_checkpoint latest` continues it. A second signal restores the default handler (a second
    Ctrl-C kills at once; the last complete checkpoint stays valid).
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

    def __enter__(self) -> "StopRequest":
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
