"""A fine-tuning run's checkpoints: which one a resume takes, whether it is whole and safe to read, and whether it
belongs to the run being resumed (`finetune.train` calls these; pretraining's twin is `pretrain/checkpointing.py`).

- `resolve_resume` / `last_complete_checkpoint`: `--resume_from_checkpoint last` (or a folder) as the newest
  checkpoint whose save finished (the Trainer writes trainer_state.json last); `remove_incomplete_checkpoints`
  deletes the others after a full disk.
- `verify_checkpoint`: a Trainer checkpoint (not a pretraining one), its weights in safetensors, and every pickle
  file read with `minibert.safety.load_tensor_file` before the Trainer touches it.
- `run_settings` / `RunSettings` / `check_resume_settings`: pretraining's rule for a resume, the same run continued
  or the change refused by name. The settings are every argument except `finetune.args.RESUMABLE`, plus the labels,
  the training rows and the process count; kept in each checkpoint's trainer_state.json.
"""

from __future__ import annotations

import logging
import os
import shutil

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from minibert.cli import UserError, one_line
from minibert.runs import CHECKPOINTS_DIR, argument_settings, changed_settings, is_resume_keyword
from minibert.safety import PICKLE_SUFFIXES, load_tensor_file, read_json_dict

from .args import RESUMABLE

logger = logging.getLogger("finetune")


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """--resume_from_checkpoint as a complete Trainer checkpoint folder (checked by `verify_checkpoint`)."""
    if resume is None:
        return None
    if is_resume_keyword(resume):  # last / latest
        folder = os.path.join(output_dir, CHECKPOINTS_DIR)
        last = last_complete_checkpoint(folder)
        if last is None:
            raise UserError(f"--resume_from_checkpoint {resume}: no complete checkpoint in {folder}")
        verify_checkpoint(last)
        return last
    if not os.path.isdir(resume):
        raise UserError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    verify_checkpoint(resume)
    return resume


def _trainer_state(path: str) -> dict | None:
    """A Trainer checkpoint's trainer_state.json (written last, so its presence means complete), or None."""
    return read_json_dict(os.path.join(path, "trainer_state.json"))


def last_complete_checkpoint(folder: str) -> str | None:
    """The newest checkpoint-N in `folder` that a save finished (a SIGKILL mid-save leaves one without its state)."""
    if not os.path.isdir(folder):
        return None
    numbered = sorted(
        (
            (int(n.split("-")[1]), n)
            for n in os.listdir(folder)
            if n.startswith("checkpoint-") and n.split("-")[1].isdigit()
        ),
        reverse=True,
    )
    for _, name in numbered:
        path = os.path.join(folder, name)
        state = _trainer_state(path)
        if (
            state is not None
            and isinstance(state.get("global_step"), int)
            and os.path.isfile(os.path.join(path, "model.safetensors"))
        ):
            return path
        logger.warning("skipping %s: an incomplete checkpoint (interrupted save)", path)
    return None


def remove_incomplete_checkpoints(folder: str) -> list[str]:
    """Delete the checkpoint-N folders a save did not finish (no trainer_state.json, which is written last)."""
    removed = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith("checkpoint-") and os.path.isdir(path) and _trainer_state(path) is None:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
    return removed


def verify_checkpoint(path: str) -> None:
    """Refuse a folder that is not a complete fine-tuning checkpoint, and any pickle in it holding more than tensors
    (the Trainer reads them with `weights_only=True` too, but fails with a traceback)."""
    state = _trainer_state(path)
    if state is None:
        raise UserError(
            f"--resume_from_checkpoint {path} is not a fine-tuning checkpoint (no readable trainer_state.json)"
        )
    if "completed_steps" in state:  # pretraining's Progress
        raise UserError(
            f"--resume_from_checkpoint {path} is a pretraining checkpoint; fine-tune the pretrained model "
            "with --model_name_or_path (resume takes a checkpoint of a fine-tuning run)"
        )
    if not isinstance(state.get("global_step"), int):
        raise UserError(
            f"--resume_from_checkpoint {path} is not a fine-tuning checkpoint (its trainer_state.json is not the Trainer's)"
        )
    names = os.listdir(path)
    if "model.safetensors" not in names:
        raise UserError(f"--resume_from_checkpoint {path} has no model.safetensors (pickled weights are never loaded)")
    for name in sorted(names):
        # training_args.bin (a pickled TrainingArguments) is written by the Trainer but never read on resume.
        if name.endswith(PICKLE_SUFFIXES) and name != "training_args.bin":
            load_tensor_file(os.path.join(path, name))


# ---------------------------------------------------------------------------------------------------------------
# What a resume must match

RUN_SETTINGS = "RunSettings"  # the callback's entry in trainer_state.json's `stateful_callbacks`
PATH_FIELDS = ("model_name_or_path", "train_file", "validation_file", "dataset_name")


def run_settings(model_args, data_args, training_args, hub_args) -> dict:
    """What a resume must match: every argument but `finetune.args.RESUMABLE`, and the number of processes (the
    global batch, and so the data order); `data_settings` adds what the data decided."""
    settings = argument_settings((model_args, data_args, training_args, hub_args), RESUMABLE, PATH_FIELDS)
    settings["num_processes"] = int(os.environ.get("WORLD_SIZE", "1"))
    return settings


def data_settings(prepared) -> dict:
    """The labels (the classifier's outputs) and the number of training rows (another file under the same name)."""
    labels = {"problem_type": prepared.labels.problem_type, "names": list(prepared.labels.names)}
    return {"labels": labels, "train_rows": len(prepared.splits["train"])}


def saved_settings(checkpoint: str) -> dict | None:
    """The `run_settings` a checkpoint was made with (None, with a warning, for one written before they were kept)."""
    entry = ((_trainer_state(checkpoint) or {}).get("stateful_callbacks") or {}).get(RUN_SETTINGS)
    settings = (entry.get("args") or {}).get("settings") if isinstance(entry, dict) else None
    if not isinstance(settings, dict):
        logger.warning("%s records no run settings (an older checkpoint): they are not checked", checkpoint)
        return None
    return settings


def check_resume_settings(checkpoint: str, saved: dict | None, settings: dict) -> None:
    """Pretraining's rule: a resume continues the same run, or the change is refused by name."""
    changed = changed_settings(saved or {}, settings)
    if changed:
        raise UserError(
            f"{checkpoint} was made with other settings than this run's: {'; '.join(c[:300] for c in changed)}. "
            "Resume with the checkpoint's settings, or start a new run in another --output_dir"
        )


def check_checkpoint_fits(model, checkpoint: str) -> None:
    """The checkpoint's weights have this model's shapes: one line naming the first that differs, not torch's
    size-mismatch traceback (for a checkpoint that records no settings)."""
    from safetensors import safe_open

    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    path = os.path.join(checkpoint, "model.safetensors")
    try:
        with safe_open(path, framework="pt") as f:
            saved = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # SafetensorError, OSError: a truncated header
        raise UserError(f"{path} is damaged or truncated ({one_line(e)[:200]}); use an earlier checkpoint") from None
    for name, shape in saved.items():
        if name in shapes and shapes[name] != shape:
            raise UserError(
                f"--resume_from_checkpoint {checkpoint} holds another model: {name} is {shape} there and "
                f"{shapes[name]} in this run's (other labels or another base model); resume with the run's own "
                "settings, or start a new run in another --output_dir"
            )


class RunSettings(TrainerCallback, ExportableState):
    """`run_settings` in every checkpoint's trainer_state.json, under `stateful_callbacks`: transformers' place for
    a callback's state, written within the state file, so every complete checkpoint holds them."""

    def __init__(self, settings: dict):
        self.settings = settings

    def state(self) -> dict:
        return {"args": {"settings": self.settings}, "attributes": {}}

    def on_train_begin(self, args, state, control, **kwargs):
        # A state resumed from a checkpoint without the entry: the Trainer's next save expects it.
        state.stateful_callbacks.setdefault(RUN_SETTINGS, self.state())
