"""What a run of `minibert-pretrain` and one of `minibert-finetune` share: one vocabulary for both CLIs.

- Folder names: `CHECKPOINTS_DIR` (resumable states), `RESULTS_FILE` (final metrics), `DEFAULT_PRETRAINED_DIR`
  (where the pretraining demo writes, and where fine-tuning looks when given no model).
- Resume keywords: `--resume_from_checkpoint latest` and `last` mean the same in both CLIs.
- Resume settings: `argument_settings` (every field of the argument dataclasses but an allow-list) and
  `changed_settings` (what differs from a checkpoint's), so that a new flag is checked on resume by default.
- Run set-up: the CPU threads a process may use, whether the launch needs a CPU process group, the logging set-up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys

CHECKPOINTS_DIR = "checkpoints"
RESULTS_FILE = "all_results.json"
DEFAULT_PRETRAINED_DIR = "outputs/pretrain"
# What `minibert.hub.save_model_folder` writes: each CLI's output folder holds these beside its own files.
MODEL_FOLDER_FILES = frozenset(
    {
        "README.md",
        "config.json",
        "model.safetensors",
        "modeling_minibert.py",
        "configuration_minibert.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "generation_config.json",
        "bert",  # the plain-BERT twin (`minibert.hub.BERT_TWIN_DIR`, --export_bert)
    }
)

# `--resume_from_checkpoint latest` (run_mlm_no_trainer's habit) or `last` (Trainer users' word): the newest one.
RESUME_KEYWORDS = ("latest", "last")


def is_resume_keyword(value: str | None) -> bool:
    return value is not None and value.lower() in RESUME_KEYWORDS


def argument_settings(groups, allowed: frozenset[str] | set[str], paths: tuple[str, ...] = ()) -> dict:
    """Every field of the argument dataclass instances `groups` except those in `allowed` (the fields a resume may
    change), as JSON values: what a resume must match. Derived from the dataclasses, so a new flag is compared
    unless it joins `allowed` with its reason. The fields in `paths` that name an existing file or folder are
    compared as real paths (the same folder named from another working directory is the same input)."""
    settings = {}
    for group in groups:
        for f in dataclasses.fields(group):
            if f.name in allowed:
                continue
            value = getattr(group, f.name)
            if f.name in paths and isinstance(value, str) and os.path.exists(value):
                value = os.path.realpath(value)
            settings[f.name] = value
    return json.loads(json.dumps(settings, default=str))


def changed_settings(saved: dict, current: dict) -> list[str]:
    """`name saved -> current` for each setting both record with different values (a name only one of them records,
    from another version of minibert, cannot be compared)."""
    return [
        f"{name} {saved[name]!r} -> {current[name]!r}"
        for name in sorted(set(saved) & set(current))
        if saved[name] != current[name]
    ]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, as a container or `taskset` sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def has_accelerator() -> bool:
    """A GPU (or another torch accelerator) this process can use."""
    import torch

    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def needs_cpu_process_group() -> bool:
    """Several processes and no GPU: accelerate forms a (gloo) process group only when told to use the CPU;
    otherwise each process would train alone on all the data, every one writing the same output_dir."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator()


def set_cpu_threads() -> int:
    """torch's intra-op threads: the usable cores shared by this machine's processes, unless OMP_NUM_THREADS says.

    torch's default is every core of the machine, whatever the affinity mask or the other processes of the launch:
    on a busy or shared machine OpenMP threads then spin-wait for each other, and small models' steps get 10-30x
    slower. Returns the number set."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    local_processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    threads = max(usable_cores() // local_processes, 1)
    torch.set_num_threads(threads)
    return threads


def setup_logging(
    is_local_main: bool, packages: tuple[str, ...] = ("pretrain", "finetune", "minibert"), stream=None
) -> None:
    """One log format for both CLIs: INFO from our packages on each machine's main process, warnings elsewhere;
    transformers and datasets at warnings (errors off the main process). `stream`: stderr unless given."""
    import datasets
    import transformers

    level = logging.INFO if is_local_main else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=level,
        stream=stream or sys.stderr,
    )
    for package in packages:
        logging.getLogger(package).setLevel(level)
    # accelerate logs every file of every checkpoint at INFO, and warns at each save that the tied decoder
    # weight was stored once (expected: it is re-tied on load).
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    logging.getLogger("accelerate.utils.other").addFilter(
        lambda record: "Removed shared tensor" not in record.getMessage()
    )
    verbosity = "warning" if is_local_main else "error"
    getattr(datasets.utils.logging, f"set_verbosity_{verbosity}")()
    getattr(transformers.utils.logging, f"set_verbosity_{verbosity}")()
