"""Resumable training state: atomic checkpoints, the `latest` pointer, rotation, and stopping on a signal.

Layout of `output_dir/checkpoints/`:

    step_200/              accelerator.save_state (model, optimizer, RNG states, grad scaler)
        trainer_state.json the position in the data, the run's shape and settings (`Progress`), written by us (#3242)
        lr_scheduler.json  the LR schedule's state (JSON: no pickle to trust)
    step_400/
    latest                 one line: the name of the newest complete checkpoint, replaced last

A checkpoint is written into `.tmp-step_N` and renamed into place only when complete, then `latest` is replaced
(write + fsync + os.replace). A crash at any moment leaves `latest` naming a complete checkpoint.
The resume position is read from trainer_state.json, never parsed from a folder name.

Resuming never unpickles a file: `verify_checkpoint` reads every pickle-format file of the checkpoint with the
restricted loader (`minibert.safety.load_tensor_file`) before `accelerator.load_state` touches it, and refuses a
checkpoint that lacks a file the exact resume needs (weights, optimizer, the RNG state of every process).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, fields

from minibert.cli import UserError, one_line
from minibert.runs import CHECKPOINTS_DIR, changed_settings, is_resume_keyword
from minibert.safety import (
    PICKLE_SUFFIXES,
    is_disk_full,
    load_tensor_file,
    read_json_object,
    write_atomically,
    write_json,
)

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
TMP_PREFIX = ".tmp-"
SCHEDULER_FILE = "lr_scheduler.json"


@dataclass
class Progress:
    """Where a run stands, and the shape of the run that wrote it (checked on resume)."""

    completed_steps: int = 0  # optimizer updates applied (skipped non-finite steps count: the data moved on)
    epoch: int = 0  # the epoch the next step reads from
    step_in_epoch: int = 0  # optimizer steps already taken in that epoch
    batches_in_epoch: int = 0  # micro-batches (of each process) already read in that epoch
    tokens_seen: int = 0  # non-padding tokens trained on, all processes
    samples_seen: int = 0  # sequences trained on, all processes
    train_runtime: float = 0.0  # seconds spent in training steps, all sessions (excludes eval and checkpoints)
    num_processes: int = 1
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 0
    seed: int = 0
    settings: dict = field(default_factory=dict)  # what the run was made with; a resume must match (`run_settings`)

    @property
    def global_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.num_processes * self.gradient_accumulation_steps

    @classmethod
    def read(cls, checkpoint_dir: str) -> Progress:
        path = os.path.join(checkpoint_dir, STATE_FILE)
        if not os.path.isfile(path):
            raise UserError(f"{checkpoint_dir} is not a complete checkpoint: {STATE_FILE} is missing")
        data = read_json_object(path, "use an earlier checkpoint")
        out = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "settings":
                ok = isinstance(value, dict)
            elif isinstance(f.default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise UserError(f"{path} is damaged: {f.name} is {value!r}")
            out[f.name] = value
        if "batches_in_epoch" not in data:  # written before batch-size warmup: every step read a full window
            out["batches_in_epoch"] = out.get("step_in_epoch", 0) * out.get("gradient_accumulation_steps", 1)
        return cls(**out)

    def write(self, checkpoint_dir: str) -> None:
        write_json(os.path.join(checkpoint_dir, STATE_FILE), asdict(self))


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
        with open(pointer, "rb") as f:
            name = f.read(256).decode("utf-8", errors="replace").strip()
        path = os.path.join(root, name)
        if name and os.path.basename(name) == name and os.path.isfile(os.path.join(path, STATE_FILE)):
            return path
        logger.warning("%s names %r, which is not a complete checkpoint; looking for the newest one", pointer, name)
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def resolve_resume(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """--resume_from_checkpoint as a checkpoint folder, or None for a fresh start."""
    if not resume_from_checkpoint:
        return None
    if is_resume_keyword(resume_from_checkpoint):  # latest / last
        path = latest_checkpoint(output_dir)
        if path is None:
            logger.info(
                "--resume_from_checkpoint %s: no checkpoint in %s yet, starting from scratch",
                resume_from_checkpoint,
                output_dir,
            )
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
        logger.warning(
            "resuming a run started with --seed %d under --seed %d: the data order changes", progress.seed, current.seed
        )
    changed = changed_settings(progress.settings, current.settings)
    if changed:
        raise UserError(
            f"{path} was made with other settings than this run's: {'; '.join(changed)}. Resume with the "
            "checkpoint's settings, or start a new run in another --output_dir"
        )
    if not progress.settings:
        logger.warning("%s records no run settings (an older checkpoint): they are not checked", path)


def verify_checkpoint(path: str, num_processes: int, has_scaler: bool, sharded: bool = False) -> None:
    """Refuse a checkpoint that cannot be resumed exactly, or holds a pickle with anything but tensors.

    Every pickle-format file is read with the restricted loader first, so `accelerator.load_state` (which
    unpickles registered objects without that restriction, and ignores a bad RNG state) only sees files that
    passed. `sharded`: FSDP / DeepSpeed layouts, whose weights and optimizer live in sub-folders."""
    names = set(os.listdir(path))
    if not sharded:
        if "model.safetensors" not in names:
            if "pytorch_model.bin" in names:
                raise UserError(
                    f"{path} holds its weights as a pickle (pytorch_model.bin), which resume does not read: resume "
                    "from a checkpoint minibert wrote (model.safetensors)"
                )
            raise UserError(f"{path} is not a complete checkpoint: model.safetensors is missing")
        _check_safetensors(os.path.join(path, "model.safetensors"))
        if "optimizer.bin" not in names:
            raise UserError(f"{path} is not a complete checkpoint: optimizer.bin (the optimizer's state) is missing")
    if SCHEDULER_FILE not in names:
        legacy = [n for n in names if n.startswith("custom_checkpoint_")]
        why = (
            f" (it keeps the LR schedule in {legacy[0]}, a pickle, as checkpoints before this version did; "
            "resume never unpickles such a file)"
            if legacy
            else ""
        )
        raise UserError(f"{path} is not a complete checkpoint: {SCHEDULER_FILE} is missing{why}")
    read_json_object(os.path.join(path, SCHEDULER_FILE), "use an earlier checkpoint")
    rng = [f"random_states_{i}.pkl" for i in range(num_processes)]
    for name in rng:
        if name not in names:
            raise UserError(
                f"{path} is not a complete checkpoint: {name} (the RNG state of process "
                f"{name[14:-4]}) is missing, so the resume would not be exact"
            )
    if has_scaler and "scaler.pt" not in names:
        raise UserError(f"{path} is not a complete checkpoint: scaler.pt (the fp16 grad scaler) is missing")
    for name in sorted(names):
        if name.endswith(PICKLE_SUFFIXES) and os.path.isfile(os.path.join(path, name)):
            state = load_tensor_file(os.path.join(path, name))
            rng_keys = {"random_state", "numpy_random_seed", "torch_manual_seed"}
            if name in rng and not (isinstance(state, dict) and rng_keys <= set(state)):
                raise UserError(f"{os.path.join(path, name)} is damaged: it holds no RNG state")


def _check_safetensors(path: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except Exception as e:  # SafetensorError, OSError: the header or the size is wrong
        raise UserError(f"{path} is damaged or truncated ({one_line(e)[:200]}); use an earlier checkpoint") from None


def load_scheduler_state(path: str, lr_scheduler) -> None:
    file = os.path.join(path, SCHEDULER_FILE)
    state = read_json_object(file, "use an earlier checkpoint")
    try:
        lr_scheduler.load_state_dict(state)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        reason = one_line(e)[:200]
        raise UserError(f"{file} is damaged ({reason}); use an earlier checkpoint") from None


def save_checkpoint_state(
    accelerator, output_dir: str, progress: Progress, total_limit: int | None, lr_scheduler=None
) -> str:
    """Save the full training state as `checkpoints/step_N`, atomically; every process must call this.

    `lr_scheduler`'s state goes to lr_scheduler.json (it is not registered with accelerate, which would pickle it)."""
    root = checkpoints_root(output_dir)
    name = f"step_{progress.completed_steps}"
    final, tmp = os.path.join(root, name), os.path.join(root, TMP_PREFIX + name)
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(tmp)  # every process writes its part (its RNG state; shards under FSDP / DeepSpeed)
        if accelerator.is_main_process:
            if lr_scheduler is not None:
                write_json(os.path.join(tmp, SCHEDULER_FILE), lr_scheduler.state_dict())
            progress.write(tmp)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial save must not keep the disk full for the retry
        if is_disk_full(e, root):
            raise UserError(
                f"no space left to save {final}: the partial checkpoint was removed, and {LATEST_FILE} still names "
                "the previous one; free space (or lower --checkpoints_total_limit) and rerun with "
                "--resume_from_checkpoint latest"
            ) from None
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = os.path.join(root, TMP_PREFIX + name + ".old")
        if os.path.exists(final):  # the same step saved before (e.g. a resumed run ending where it began)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        write_atomically(os.path.join(root, LATEST_FILE), name + "\n")
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
