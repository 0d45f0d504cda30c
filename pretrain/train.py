"""The pretraining loop: MLM + NSP with accelerate, from one CPU to many GPUs and nodes.

`pretrain(model_args, data_args, training_args, hub_args)` runs a whole job and returns its metrics:

    data (pretrain.data) -> model -> accelerator.prepare -> [resume] -> loop -> checkpoint -> evaluate -> export

The loop is `run_mlm_no_trainer.py`'s, with what a long run on shared hardware needs:

- The loss of an optimizer step is the mean over *all* masked tokens (and all sequences, for NSP) of the global
  batch, however it is split into processes and micro-batches: each micro-batch contributes
  `sum / global_count`, where the global counts of the step are known before its first forward (the step's
  micro-batches are fetched first). So one process with batch 2B and two with batch B take the same step, and
  gradient accumulation is exact, not "the mean of means".
- The schedule steps once per optimizer update on any number of processes (`optim.UpdateStepScheduler`).
- The data order is a function of (seed, epoch) (accelerate's seedable sampler, `set_epoch` every epoch) and the
  masks of (seed, epoch, example) (`pretrain.collator`), so a resumed run sees what an uninterrupted run sees:
  `skip_first_batches` repositions the first epoch after a resume (a `datasets` stream goes straight back to its
  saved position, `pretrain.data.ResumableStream`), later epochs start from scratch.
- One small host read per optimizer step (not per micro-batch): the step's grad norm is checked for being finite
  and the stop flags (signal, time budget) are agreed by all processes in the same read. A non-finite step is
  skipped (no update, gradients zeroed); `MAX_NONFINITE_STEPS` in a row end the run. Losses and token counts
  stay on the device until a logging step.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import time
from dataclasses import asdict
from datetime import timedelta

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import (
    DistributedType,
    GradientAccumulationPlugin,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    set_seed,
)
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from minibert import MiniBertConfig, MiniBertForPreTraining
from minibert.cli import HubArguments, UserError
from minibert.safety import OutputLock, check_output_dir, mark_output_dir, non_finite_parameters

from .args import ModelArguments, PretrainingArguments, parse_config_overrides
from .checkpointing import (
    Progress,
    StopRequest,
    check_compatible,
    checkpoints_root,
    latest_checkpoint,
    load_scheduler_state,
    resolve_resume,
    save_checkpoint_state,
    verify_checkpoint,
)
from .collator import DataCollatorForPreTraining
from .demo import describe_data, fill_mask_prompts
from .evaluation import eval_collator, evaluate
from .optim import build_lr_scheduler, build_optimizer
from .report import CURVES_FILE, RESULTS_FILE, MetricsLog, hardware_description, model_card, plot_training_curves, write_json

logger = logging.getLogger(__name__)

MAX_NONFINITE_STEPS = 20  # consecutive skipped steps that end the run
DRY_RUN_STEPS = 3
DRY_RUN_EVAL_BATCHES = 2


class TrainingDiverged(UserError):
    """The loss or the gradients stayed non-finite: lower the learning rate, use bf16 rather than fp16, check data."""


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------
def _typed(value: str, like):
    """A --config_overrides value as the type of the field's default."""
    if isinstance(like, bool):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if like is None:
        if value.lower() in ("none", "null"):
            return None
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def typed_config_overrides(text: str | None, base) -> dict:
    """--config_overrides as config kwargs typed against `base` (a config); unknown names are an error."""
    out = {}
    for key, value in parse_config_overrides(text).items():
        if not hasattr(base, key):
            raise UserError(f"--config_overrides: {key!r} is not a {type(base).__name__} field")
        try:
            out[key] = _typed(value, getattr(base, key))
        except ValueError as e:
            raise UserError(f"--config_overrides: {key}={value}: {e}") from None
    return out


def build_config(model_args: ModelArguments, tokenizer, max_seq_length: int) -> MiniBertConfig:
    """A fresh model's config: the preset size, the tokenizer's vocabulary, then --config_overrides."""
    overrides = typed_config_overrides(model_args.config_overrides, MiniBertConfig())
    if "hidden_size" in overrides:  # keep BERT's proportions unless told otherwise
        overrides.setdefault("num_attention_heads", max(1, overrides["hidden_size"] // 64))
        overrides.setdefault("intermediate_size", 4 * overrides["hidden_size"])
    overrides.setdefault("vocab_size", len(tokenizer))
    overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
    overrides.setdefault("max_position_embeddings", max(512, max_seq_length))
    try:
        config = MiniBertConfig.from_preset(model_args.model_size or "tiny", **overrides)
    except (ValueError, TypeError) as e:
        raise UserError(f"bad model configuration: {e}") from None
    check_config_fits_data(config, tokenizer, max_seq_length)
    return config


def check_config_fits_data(config, tokenizer, max_seq_length: int) -> None:
    """Embedding tables large enough for every id the data holds (else an IndexError deep in the first step)."""
    problems = []
    if config.vocab_size < len(tokenizer):
        problems.append(f"vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    if config.type_vocab_size < 2:
        problems.append(f"type_vocab_size={config.type_vocab_size}: next-sentence pairs need 2 segment types")
    if config.max_position_embeddings < max_seq_length:
        problems.append(f"max_position_embeddings={config.max_position_embeddings} is below --max_seq_length {max_seq_length}")
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and not 0 <= pad < config.vocab_size:
        problems.append(f"pad_token_id={pad} is not an id of the {config.vocab_size}-token vocabulary")
    if problems:
        raise UserError(f"--config_overrides: {'; '.join(problems)}")


def build_model(model_args: ModelArguments, tokenizer, max_seq_length: int) -> MiniBertForPreTraining:
    """A fresh `MiniBertForPreTraining`, or the checkpoint of --model_name_or_path (BERT ones converted)."""
    if not model_args.model_name_or_path:
        return MiniBertForPreTraining(build_config(model_args, tokenizer, max_seq_length))
    from minibert.convert import load_pretrained_minibert

    # Overrides on a checkpoint can change dropout and the like; shapes must still fit its weights.
    overrides = typed_config_overrides(model_args.config_overrides, MiniBertConfig())
    model = load_pretrained_minibert(MiniBertForPreTraining, model_args.model_name_or_path, **overrides)
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but {model_args.model_name_or_path} only "
            f"{model.config.vocab_size} embeddings: use the checkpoint's own tokenizer"
        )
    if max_seq_length > model.config.max_position_embeddings:
        raise UserError(
            f"--max_seq_length {max_seq_length} is longer than the {model.config.max_position_embeddings} "
            f"positions of {model_args.model_name_or_path}"
        )
    check_config_fits_data(model.config, tokenizer, max_seq_length)
    return model


def build_collator(data_args, tokenizer, seed: int) -> DataCollatorForPreTraining:
    """Padding and MLM masking of the batches, the masks drawn per (seed, epoch, example)."""
    return DataCollatorForPreTraining(
        tokenizer,
        mlm_probability=getattr(data_args, "mlm_probability", 0.15),
        mask_replace_prob=getattr(data_args, "mask_replace_prob", 0.8),
        random_replace_prob=getattr(data_args, "random_replace_prob", 0.1),
        whole_word_mask=getattr(data_args, "whole_word_mask", False),
        pad_to_multiple_of=getattr(data_args, "pad_to_multiple_of", None),
        seed=seed,
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, of which embeddings); tied weights counted once."""
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in params.values())
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return total, embeddings


def make_accelerator(args: PretrainingArguments, timeout: timedelta | None = None) -> Accelerator:
    """`timeout`: the process group's (every collective's, and the barrier the data preparation waits in)."""
    tracker = None
    if args.with_tracking:
        tracker = args.report_to if args.report_to != "all" else "all"
    # `accelerate launch --multi_gpu --num_processes N` on a machine without GPUs starts N processes, but
    # accelerate 1.x only forms a (gloo) process group when told to use the CPU; otherwise each process would
    # silently train alone on the whole data, all writing the same output_dir. An FSDP launch needs the group
    # even for one process (`_fsdp_on_cpu`).
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp, deepspeed = _launched_with("FSDP"), _launched_with("DEEPSPEED")
    if deepspeed and not _has_accelerator():
        raise UserError(
            "the DeepSpeed config needs GPUs and this machine has none (accelerate would silently run plain DDP "
            "instead); on CPU processes use pretrain/accelerate_configs/fsdp.yaml, which shards there too"
        )
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if local_processes > cores and not _has_accelerator():
        # A GPU launch config (e.g. multi_gpu_8.yaml) on a machine without GPUs: N CPU processes on fewer cores end
        # minutes later in collective timeouts and hundreds of lines of tracebacks. Say so at the start instead,
        # once per machine (the other processes leave with the same status, silently).
        if int(os.environ.get("LOCAL_RANK", "0")) != 0:
            raise SystemExit(2)
        raise UserError(
            f"this launch starts {local_processes} processes on this machine, which has no GPU and {cores} CPU "
            f"core(s): the launch config asks for GPUs. Without GPUs use at most one process per core, e.g. "
            f"accelerate launch --config_file pretrain/accelerate_configs/cpu_2proc.yaml"
        )
    cpu = (world_size > 1 or fsdp) and not _has_accelerator()
    fsdp_plugin = _cpu_fsdp_plugin() if fsdp and cpu else None
    try:
        accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=args.mixed_precision,
            # Windows of exactly `gradient_accumulation_steps` micro-batches (see `_train_epoch`), so the
            # accumulation boundary never depends on where a dataloader happens to end.
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False
            ),
            # Same shuffling on every process, reseeded per epoch: the order is a function of (seed, epoch).
            # non_blocking: host-to-GPU copies from pinned memory overlap with compute.
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True, data_seed=args.seed, dispatch_batches=False, non_blocking=True
            ),
            log_with=tracker,
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)] if timeout else None,
            project_config=ProjectConfiguration(
                project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "runs")
            ),
        )
    except (ValueError, NotImplementedError) as e:  # e.g. fp16 without a GPU
        raise UserError(f"cannot set up accelerate: {e}") from None
    if accelerator.num_processes != world_size:
        raise UserError(f"launched as {world_size} processes, but accelerate formed a group of {accelerator.num_processes}")
    if fsdp_plugin is not None:
        _fsdp_on_cpu(accelerator, fsdp_plugin)
    elif fsdp and accelerator.distributed_type != DistributedType.FSDP:
        raise UserError(f"the launch asked for FSDP but accelerate set up {accelerator.distributed_type.value}")
    return accelerator


def _launched_with(kind: str) -> bool:
    """Whether `accelerate launch` was given an FSDP / DEEPSPEED config (it says so in the environment)."""
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"


def _cpu_fsdp_plugin():
    """The FSDP plugin of the launch (its FSDP_* variables), if minibert can run it on CPU processes; else refuse."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise UserError(f"fsdp_version {plugin.fsdp_version} needs GPUs; on CPU processes use fsdp_version: 2 (FSDP2)")
    if plugin.cpu_ram_efficient_loading:
        raise UserError("fsdp_cpu_ram_efficient_loading is not supported by minibert-pretrain: set it to false")
    return plugin


def _fsdp_on_cpu(accelerator: Accelerator, plugin) -> None:
    """Turn the gloo group of CPU processes into the FSDP2 run the launch asked for, or refuse.

    accelerate 1.16 applies its FSDP plugin only on GPU-like devices (AcceleratorState keeps MULTI_CPU), so a CPU
    launch of fsdp.yaml would run DDP, silently. FSDP2 itself shards over gloo: give the state what AcceleratorState
    gives a GPU run (the plugin with its mixed precision, the distributed type); `prepare`, `save_state`,
    `load_state`, `get_state_dict` and `clip_grad_norm_` then take accelerate's FSDP2 path unchanged, the one a GPU
    run takes.
    """
    from accelerate.state import PartialState

    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise UserError(
            f"the launch asked for FSDP but accelerate set up {accelerator.distributed_type.value} (no process group): "
            "start the run with `accelerate launch --config_file .../fsdp.yaml -m pretrain ...`"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def shard_tied_head(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Under FSDP2, shard the MLM head and the word embeddings as one unit, before `accelerator.prepare`.

    BERT ties two parameters to the output layer (cls.predictions.decoder): its weight is the word embeddings',
    its bias is cls.predictions.bias. accelerate puts the input and output embeddings in one unit but leaves
    cls.predictions (owner of the bias) to the root unit, and torch >= 2.13 refuses a parameter seen by two units.
    So every module owning a tied parameter is sharded here, in one unit (with accelerate's settings); the decoder,
    whose parameters that unit holds, is marked as sharded (a unit of its own with no parameters) so that
    accelerate's carving skips it. The same on GPUs and CPUs.
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    tied = {id(p) for p in model.get_output_embeddings().parameters()}
    owners = []  # word_embeddings, cls.predictions, cls.predictions.decoder
    for _, module in model.named_modules(remove_duplicate=False):
        if module not in owners and any(id(p) in tied for p in module.parameters(recurse=False)):
            owners.append(module)
    roots = [m for m in owners if not any(m is not o and any(m is s for s in o.modules()) for o in owners)]
    plugin = accelerator.state.fsdp_plugin
    mesh = getattr(accelerator, "torch_device_mesh", None)
    fully_shard(
        roots,
        reshard_after_forward=False,  # as accelerate's unit of the embeddings: used at the start and the end
        mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        offload_policy=plugin.cpu_offload,
        mesh=mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)] if mesh is not None else None,
    )
    for module in owners:
        if not isinstance(module, FSDPModule):
            fully_shard(module, ignored_params=set(module.parameters()))


def check_checkpoint_layout(path: str, accelerator) -> None:
    """Resume under the mode that wrote the checkpoint: FSDP's sharded weights are not the whole-model files of DDP."""
    by_fsdp = any(name.startswith("pytorch_model_fsdp") for name in os.listdir(path))
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if by_fsdp != fsdp:
        written = "an FSDP run (pytorch_model_fsdp_0)" if by_fsdp else "a run without FSDP (model.safetensors)"
        raise UserError(
            f"{path} was written by {written} and this run is {'' if fsdp else 'not '}FSDP: resume it with the "
            "accelerate config that wrote it"
        )


def _has_accelerator() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def _num_workers(args: PretrainingArguments, device: torch.device) -> int:
    if args.dataloader_num_workers is not None:
        return args.dataloader_num_workers
    return 2 if device.type == "cuda" else 0


def build_dataloaders(data, collator, args: PretrainingArguments, device: torch.device):
    """Train (shuffled, full batches) and eval dataloaders; `accelerator.prepare` shards them per process."""
    workers = _num_workers(args, device)
    common = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Not persistent: workers take a fresh copy of the collator (and its epoch) every epoch.
        persistent_workers=False,
    )
    streaming = isinstance(data.train_dataset, IterableDataset) or not hasattr(data.train_dataset, "__len__")
    dataset = data.train_dataset
    if streaming and hasattr(dataset, "load_state_dict"):  # a `datasets` stream: checkpoints save its position
        from .streaming import ResumableStream

        dataset = ResumableStream(dataset, record_every=args.per_device_train_batch_size)
        common["num_workers"] = 0  # the positions are recorded where the stream is read: in this process
    train = DataLoader(
        dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=not streaming,
        drop_last=True,  # every step sees the full global batch
        collate_fn=collator,
        # The loader's own generator: starting an epoch (and its workers' seeds) must not draw from the global
        # RNG, whose state a checkpoint restores for dropout; a resumed run starts an iterator where the
        # uninterrupted one did not.
        generator=torch.Generator().manual_seed(args.seed),
        **common,
    )
    evaluation = None
    if data.eval_dataset is not None:
        evaluation = DataLoader(
            data.eval_dataset,
            batch_size=args.per_device_eval_batch_size,
            shuffle=False,
            collate_fn=eval_collator(collator),
            generator=torch.Generator().manual_seed(args.seed),
            **common,
        )
    return train, evaluation, streaming


def _model_inputs(batch: dict) -> dict:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label")}
    # The unpadded fast path, computed by the collator on the CPU (absent when a user's collator lacks it).
    inputs.update({k: batch[k] for k in ("token_indices", "masked_positions") if k in batch})
    return inputs


def _export_model(accelerator, model):
    """A plain `MiniBertForPreTraining` holding the trained weights (collective under FSDP / DeepSpeed)."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        state_dict = accelerator.get_state_dict(model)  # gathered on the main process
        unwrapped = accelerator.unwrap_model(model)
        if not accelerator.is_main_process:
            return None
        fresh = MiniBertForPreTraining(unwrapped.config)
        fresh.load_state_dict(state_dict)
        return fresh
    return accelerator.unwrap_model(model)


# What a pretraining run writes in output_dir; a folder holding anything else is not ours to write into.
OUR_FILES = {"checkpoints", "runs", RESULTS_FILE, CURVES_FILE, "metrics.jsonl", "data_stats.json", "README.md",
             "config.json", "model.safetensors", "modeling_minibert.py", "configuration_minibert.py", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "generation_config.json"}  # fmt: skip
CLI_NAME = "pretraining"  # as output folders record it (`minibert.safety.mark_output_dir`)


def _prepare_output_dir(args: PretrainingArguments, resume_path: str | None, accelerator, model_path=None) -> bool:
    """Refuse an output_dir that is not ours to write, or that holds a run we were not told to continue or replace.

    Deletes nothing: returns whether the previous run must be cleared (`_clear_previous_run`, once every input has
    been checked)."""
    if args.dry_run:
        return False
    out = args.output_dir
    if model_path and os.path.isdir(model_path) and os.path.isdir(out) and os.path.samefile(model_path, out):
        raise UserError(f"--output_dir {out} is the checkpoint given as --model_name_or_path; write the new model elsewhere")
    check_output_dir(out, CLI_NAME, OUR_FILES, evidence={"checkpoints", RESULTS_FILE, "metrics.jsonl"})
    if resume_path is not None:
        return False
    existing = latest_checkpoint(out)
    if existing is None:
        return False
    if not args.overwrite_output_dir:
        raise UserError(
            f"{args.output_dir} already holds a run ({os.path.relpath(existing, args.output_dir)}): pass "
            "--resume_from_checkpoint latest to continue it, or --overwrite_output_dir to start over"
        )
    return True


def _clear_previous_run(args: PretrainingArguments, accelerator) -> None:
    """--overwrite_output_dir: the previous run's checkpoints and TensorBoard logs go (its model is replaced at the end)."""
    if accelerator.is_main_process:
        shutil.rmtree(checkpoints_root(args.output_dir), ignore_errors=True)
        shutil.rmtree(os.path.join(args.output_dir, "runs"), ignore_errors=True)  # the old run's TensorBoard logs
    accelerator.wait_for_everyone()


def _load_state(accelerator, path: str) -> None:
    """`accelerator.load_state` on a checkpoint `verify_checkpoint` passed; what still fails names the checkpoint."""
    import pickle

    try:
        accelerator.load_state(path)
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError, OSError) as e:
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"cannot restore the training state in {path} ({reason}); resume from an earlier checkpoint") from None


# Config fields and arguments that change what a run computes: a resume must use the checkpoint's.
_MODEL_SETTINGS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "max_position_embeddings", "type_vocab_size", "hidden_act", "hidden_dropout_prob",
                   "attention_probs_dropout_prob", "pre_layer_norm", "gated_feed_forward", "attention_bias",
                   "mlp_bias")  # fmt: skip
_DATA_SETTINGS = ("train_file", "validation_file", "dataset_name", "dataset_config_name", "max_seq_length",
                  "mlm_probability", "mask_replace_prob", "random_replace_prob", "short_seq_prob", "whole_word_mask",
                  "dupe_factor", "validation_split_percentage", "streaming")  # fmt: skip
_TRAINING_SETTINGS = ("learning_rate", "weight_decay", "optimizer", "adam_beta1", "adam_beta2", "adam_epsilon",
                      "lr_scheduler_type", "lr_decay_ratio", "lr_decay_type", "num_warmup_steps", "warmup_ratio",
                      "max_grad_norm")  # fmt: skip


def run_settings(config, data, data_args, args: PretrainingArguments, accelerator) -> dict:
    """What the run is made with (model shape, vocabulary, data, masking, optimizer, schedule), as JSON values;
    saved with every checkpoint and compared on resume (`checkpointing.check_compatible`)."""
    import json

    settings = {f"model.{k}": getattr(config, k) for k in _MODEL_SETTINGS if hasattr(config, k)}
    settings.update({k: getattr(data_args, k) for k in _DATA_SETTINGS if hasattr(data_args, k)})
    settings.update({k: getattr(args, k) for k in _TRAINING_SETTINGS})
    settings["mixed_precision"] = accelerator.mixed_precision
    tokenizer = data.tokenizer
    try:
        from .tokenizer import tokenizer_fingerprint

        settings["tokenizer"] = tokenizer_fingerprint(tokenizer)
    except (AttributeError, ImportError):  # not a fast tokenizer
        settings["tokenizer"] = f"{type(tokenizer).__name__} of {len(tokenizer)} tokens"
    try:
        settings["train_sequences"] = len(data.train_dataset)
    except TypeError:  # streamed
        pass
    return json.loads(json.dumps(settings, default=str))  # as a checkpoint holds them (tuples as lists, ...)


def _tracker_config(*arg_groups) -> dict:
    """Hyperparameters as the flat scalars TensorBoard's hparams accept."""
    config = {}
    for group in arg_groups:
        if group is None:
            continue
        for key, value in asdict(group).items():
            if key in ("hub_token",):
                continue
            config[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


# --------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------
class Trainer:
    """The state of one pretraining run between `pretrain()`'s set-up and its end. Not a framework: a place for
    the loop's pieces (a step, logging, evaluating, checkpointing) to share the objects they all use."""

    def __init__(self, accelerator, model, optimizer, lr_scheduler, train_dataloader, eval_dataloader, collator,
                 args: PretrainingArguments, progress: Progress, max_train_steps: int, steps_per_epoch: int | None,
                 metrics: MetricsLog, streaming: bool = False):  # fmt: skip
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_dataloader = train_dataloader
        self.eval_dataloader = eval_dataloader
        self.collator = collator
        self.args = args
        self.progress = progress
        self.max_train_steps = max_train_steps
        self.steps_per_epoch = steps_per_epoch
        self.metrics = metrics
        # Streamed shards can differ in length: every process ends an epoch when the first one runs out (else the
        # others would wait for it in the next all-reduce forever). Costs one host read per step, streamed only.
        self.agree_on_epoch_end = streaming and accelerator.num_processes > 1
        self.stream = None  # a `ResumableStream`: checkpoints save its position, a resume goes back to it
        self.stream_resumed = False
        self.gas = args.gradient_accumulation_steps
        self.checkpoint_every = args.checkpoint_interval()
        self.last_saved_step = progress.completed_steps if progress.completed_steps else None
        self.consecutive_skips = 0
        self.skipped_steps = 0
        self.stop_reason: str | None = None
        self.stop_signal: int | None = None
        self.global_batch = args.per_device_train_batch_size * accelerator.num_processes * self.gas
        device = accelerator.device
        self._zero = torch.zeros((), device=device)
        self._one = torch.ones((), device=device)
        # Running sums since the last log, on the device: [mlm loss, nsp loss, grad norm, applied steps].
        self._log_sums = torch.zeros(4, dtype=torch.float32, device=device)
        self._tokens = torch.zeros((), dtype=torch.int64, device=device)  # non-padding tokens, not yet flushed
        self._unlogged_tokens = 0  # flushed into progress (by a checkpoint) but not yet in a training record
        self._log_steps = 0
        self._log_time = 0.0

    # ---- one optimizer step -------------------------------------------------------------------------------
    def train_step(self, window: list[dict], signalled: bool, time_up: bool) -> tuple[bool, str | None]:
        """Forward/backward over the step's micro-batches, then clip, check and update.

        Returns (skipped, stop): whether the update was skipped (non-finite), and "signal" / "time_budget" when any
        process was signalled or ran out of time (all processes learn it in the same step).
        """
        accelerator, model = self.accelerator, self.model
        # Global normalisers of the step: masked tokens over every micro-batch and process (one all-reduce, no
        # host read) and sequences (fixed: every micro-batch is full).
        masked = [(b["labels"] != -100).sum() for b in window]
        n_masked = torch.stack(masked).sum()
        if accelerator.num_processes > 1:
            n_masked = accelerator.reduce(n_masked, reduction="sum")
        n_masked = n_masked.clamp(min=1).float()
        n_sequences = float(self.global_batch)
        # DDP / FSDP / DeepSpeed average gradients over processes and accelerate divides by the accumulation
        # steps: scale back up so that the step's gradient is that of the global mean.
        scale = accelerator.num_processes * self.gas
        parts = torch.zeros(2, device=accelerator.device)
        for batch in window:
            with accelerator.accumulate(model):
                # transformers' `num_items_in_batch` convention: the MLM head returns its loss summed over this
                # micro-batch's masked tokens and divided by the step's global count (0 when none is masked).
                out = model(**_model_inputs(batch), sparse_prediction=True, num_items_in_batch=n_masked)
                mlm = out.mlm_loss
                nsp = out.nsp_loss * (batch["labels"].size(0) / n_sequences)  # mean -> share of the global mean
                accelerator.backward((mlm + nsp) * scale)
            parts += torch.stack([mlm, nsp]).detach().float()
            self._tokens += batch["attention_mask"].sum()
        if not accelerator.sync_gradients:  # cannot happen with full windows; guards a broken invariant loudly
            raise RuntimeError("gradient accumulation window out of step with accelerate")

        max_norm = self.args.max_grad_norm if self.args.max_grad_norm > 0 else float("inf")
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
        if grad_norm is None:  # DeepSpeed clips (and checks) inside its engine
            grad_norm = self._zero
        elif not torch.is_tensor(grad_norm):  # DeepSpeed's global norm is a float
            grad_norm = torch.tensor(float(grad_norm), device=accelerator.device)
        grad_norm = grad_norm.detach().float()
        flags = torch.stack([
            (~torch.isfinite(grad_norm)).float(), self._one if signalled else self._zero, self._one if time_up else self._zero
        ])  # fmt: skip
        if accelerator.num_processes > 1:
            flags = accelerator.reduce(flags, reduction="sum")
        nonfinite, signalled, time_up = (v > 0 for v in flags.tolist())  # the step's one host read
        stop = "signal" if signalled else "time_budget" if time_up else None

        if nonfinite and accelerator.scaler is None:
            skipped = True  # never let a nan/inf into the weights or the optimizer's moments
        else:  # under fp16 the grad scaler decides, and must see the overflow to lower its scale
            self.optimizer.step()
            skipped = accelerator.optimizer_step_was_skipped
            if not skipped:
                self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not skipped:
            self._log_sums += torch.cat([parts, grad_norm.view(1), self._one.view(1)])
        return skipped, stop

    # ---- bookkeeping around steps -------------------------------------------------------------------------
    def _flush_tokens(self) -> int:
        """Add the tokens counted on the device since the last flush to `progress` (all processes call this)."""
        tokens = self._tokens
        if self.accelerator.num_processes > 1:
            tokens = self.accelerator.reduce(tokens, reduction="sum")
        count = int(tokens.item())
        self._tokens.zero_()
        self.progress.tokens_seen += count
        return count

    def log_training(self, bar) -> None:
        """Reduce the running sums over processes and write a training record (a logging step's host read)."""
        sums = self._log_sums
        if self.accelerator.num_processes > 1:
            # the loss parts are shares of a global mean: their sum over processes is the global mean.
            sums = torch.cat([self.accelerator.reduce(sums[:2], reduction="sum"), sums[2:]])
        mlm, nsp, grad_norm, applied = sums.tolist()
        tokens = self._flush_tokens() + self._unlogged_tokens
        elapsed = max(self._log_time, 1e-9)
        samples = self._log_steps * self.global_batch
        mean = (lambda x: x / applied) if applied else (lambda x: float("nan"))
        record = {
            "epoch": self._fractional_epoch(),
            "loss": mean(mlm + nsp),
            "mlm_loss": mean(mlm),
            "nsp_loss": mean(nsp),
            "learning_rate": self.lr_scheduler.get_last_lr()[0],
            "grad_norm": mean(grad_norm),
            "tokens_per_second": tokens / elapsed,
            "samples_per_second": samples / elapsed,
            "tokens_seen": self.progress.tokens_seen,
            "skipped_steps": self.skipped_steps,
        }
        self.metrics.log(record, step=self.progress.completed_steps)
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}", refresh=False)
        self._log_sums.zero_()
        self._unlogged_tokens = 0
        self._log_steps = 0
        self._log_time = 0.0

    def _fractional_epoch(self) -> float:
        if not self.steps_per_epoch:
            return float(self.progress.epoch)
        return round(self.progress.epoch + self.progress.step_in_epoch / self.steps_per_epoch, 4)

    def run_evaluation(self, max_batches: int | None = None) -> dict:
        if self.eval_dataloader is None:
            return {}
        results = evaluate(self.model, self.eval_dataloader, self.accelerator, seed=self.args.seed, max_batches=max_batches)
        self.metrics.log({"epoch": self._fractional_epoch(), **results}, step=self.progress.completed_steps)
        logger.info(
            "step %d: eval loss %.4f, MLM accuracy %.3f, NSP accuracy %.3f, perplexity %.2f",
            self.progress.completed_steps, results["eval_loss"], results["eval_mlm_accuracy"],
            results["eval_nsp_accuracy"], results["perplexity"],
        )  # fmt: skip
        return results

    def save(self) -> str | None:
        if self.args.dry_run or self.last_saved_step == self.progress.completed_steps:
            return None
        self._check_finite_weights()
        self._unlogged_tokens += self._flush_tokens()
        path = save_checkpoint_state(self.accelerator, self.args.output_dir, self.progress, self.args.checkpoints_total_limit,
                                     lr_scheduler=self.lr_scheduler)  # fmt: skip
        self.last_saved_step = self.progress.completed_steps
        if self.stream is not None and self.accelerator.is_main_process:
            self.stream.save_position(path, self.progress.epoch, self._stream_examples())
        logger.info("saved checkpoint %s", path)
        return path

    def _stream_examples(self) -> int:
        """Examples of the current epoch each process has read from the stream for the steps taken (every process
        reads every global micro-batch and keeps its share)."""
        return self.progress.step_in_epoch * self.gas * self.args.per_device_train_batch_size * self.accelerator.num_processes

    def _check_finite_weights(self) -> None:
        """Never write a checkpoint (or, after the last one, an export) from weights holding NaN or inf."""
        bad = non_finite_parameters(self.model)
        flag = torch.tensor(float(bool(bad)), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:  # FSDP shards: any process's part
            flag = self.accelerator.reduce(flag, reduction="sum")
        if flag.item() > 0:
            raise TrainingDiverged(
                f"the weights hold NaN or inf at step {self.progress.completed_steps}"
                + (f" ({', '.join(bad[:3])})" if bad else "")
                + ": nothing was saved or exported; every checkpoint in output_dir/checkpoints holds finite weights. "
                "Lower --learning_rate or raise --num_warmup_steps, and resume or start over"
            )

    # ---- epochs -------------------------------------------------------------------------------------------
    def _window(self, batches) -> list[dict] | None:
        """The next optimizer step's `gas` micro-batches, or None when the epoch has fewer left."""
        window = []
        for _ in range(self.gas):
            batch = next(batches, None)
            if batch is None:
                return None
            window.append(batch)
        return window

    def train(self, stop: StopRequest) -> None:
        """Run epochs until `max_train_steps`, a stop signal, the time budget, or too many non-finite steps."""
        args, progress = self.args, self.progress
        budget_s = args.time_budget * 60 if args.time_budget else None
        start = time.monotonic()
        bar = tqdm(
            total=self.max_train_steps, initial=progress.completed_steps, disable=not self.accelerator.is_local_main_process,
            desc="pretraining", unit="step", dynamic_ncols=True, mininterval=1.0,
        )  # fmt: skip
        self.model.train()
        try:
            while progress.completed_steps < self.max_train_steps and self.stop_reason is None:
                self._train_epoch(stop, bar, start, budget_s)
        finally:
            bar.close()

    def _train_epoch(self, stop: StopRequest, bar, start: float, budget_s: float | None) -> None:
        progress, accelerator = self.progress, self.accelerator
        # The order of epoch e is a function of (seed, e), and so are its masks: a resumed run starting in a later
        # epoch does not replay epoch 0 (accelerate #2016).
        self.train_dataloader.set_epoch(progress.epoch)
        if hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(progress.epoch)
        dataloader = self.train_dataloader
        stream_resumed, self.stream_resumed = self.stream_resumed, False
        if progress.step_in_epoch and not stream_resumed:  # resumed mid-epoch: skip what was trained on
            dataloader = accelerator.skip_first_batches(self.train_dataloader, progress.step_in_epoch * self.gas)
        batches = iter(dataloader)
        try:
            while progress.completed_steps < self.max_train_steps:
                t0 = time.perf_counter()
                window = self._window(batches)
                if self.agree_on_epoch_end:
                    out_of_data = torch.ones((), device=accelerator.device) if window is None else self._zero
                    if accelerator.reduce(out_of_data, reduction="sum").item() > 0:
                        window = None
                if window is None:  # a streamed epoch ran out (counted epochs end below, before a short window)
                    if progress.step_in_epoch == 0:
                        raise UserError("the training data yields less than one global batch")
                    progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
                    if self.checkpoint_every == "epoch":
                        self.save()
                    return
                time_up = budget_s is not None and time.monotonic() - start >= budget_s
                skipped, stop_now = self.train_step(window, stop.requested, time_up)
                step_time = time.perf_counter() - t0
                progress.train_runtime += step_time
                self._log_time += step_time
                self._log_steps += 1
                progress.samples_seen += self.global_batch
                progress.completed_steps += 1
                progress.step_in_epoch += 1
                epoch_done = bool(self.steps_per_epoch) and progress.step_in_epoch >= self.steps_per_epoch
                if epoch_done:
                    progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
                bar.update(1)
                self._after_step(skipped, epoch_done, bar)
                if stop_now:
                    self.stop_reason = stop_now
                    if stop_now == "signal":  # a process the signal did not reach reports SIGTERM
                        self.stop_signal = int(stop.signum or signal.SIGTERM)
                    if self.stop_reason == "time_budget":
                        logger.warning("time budget of %g minutes reached at step %d", self.args.time_budget, progress.completed_steps)
                    return
                if epoch_done:
                    return
        finally:
            getattr(batches, "close", lambda: None)()  # the epoch may stop before the dataloader's end (a short window, a stop)
            dataloader.end()  # ... then accelerate's record of active dataloaders needs this

    def _after_step(self, skipped: bool, epoch_done: bool, bar) -> None:
        progress, args = self.progress, self.args
        if skipped:
            self.skipped_steps += 1
            self.consecutive_skips += 1
            log = logger.info if self.accelerator.scaler is not None else logger.warning
            log("step %d: non-finite loss or gradient, update skipped (%d in a row)", progress.completed_steps, self.consecutive_skips)
            if self.consecutive_skips >= MAX_NONFINITE_STEPS:
                raise TrainingDiverged(
                    f"{self.consecutive_skips} optimizer steps in a row had a non-finite loss or gradient (up to step "
                    f"{progress.completed_steps}); lower --learning_rate, raise --num_warmup_steps, prefer bf16 to "
                    "fp16, or check the data. The last checkpoint in output_dir/checkpoints is intact."
                )
        else:
            self.consecutive_skips = 0
        step = progress.completed_steps
        if step % args.logging_steps == 0 or step == self.max_train_steps:
            self.log_training(bar)
        if args.eval_steps and step % args.eval_steps == 0 and step < self.max_train_steps:
            self.run_evaluation(DRY_RUN_EVAL_BATCHES if args.dry_run else None)
        every = self.checkpoint_every
        if (isinstance(every, int) and step % every == 0) or (every == "epoch" and epoch_done):
            self.save()


# --------------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------------
def _setup_logging(accelerator) -> None:
    import datasets
    import transformers

    level = logging.INFO if accelerator.is_local_main_process else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("pretrain").setLevel(level)
    # accelerate logs every file of every checkpoint at INFO, and warns at each save that the tied decoder
    # weight was stored once (expected: it is re-tied on load).
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    logging.getLogger("accelerate.utils.other").addFilter(lambda record: "Removed shared tensor" not in record.getMessage())
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()


def pretrain(
    model_args: ModelArguments,
    data_args,
    training_args: PretrainingArguments,
    hub_args: HubArguments | None = None,
    data=None,
) -> dict:
    """Run a pretraining job; returns the final metrics (what all_results.json holds, plus `status`).

    `status` is "completed" (also after --time_budget), or "interrupted" after SIGTERM/SIGINT (then `signal`
    holds its number, a checkpoint was saved, and nothing was exported). `data` (a `PretrainingData`) skips
    `prepare_pretraining_data`, for callers that built it already. While it runs, output_dir is locked against a
    second writer (`minibert.safety.OutputLock`, taken by the main process).
    """
    main_process = int(os.environ.get("RANK", "0")) == 0
    with OutputLock(training_args.output_dir, enabled=main_process and not training_args.dry_run):
        return _pretrain(model_args, data_args, training_args, hub_args, data)


def _pretrain(model_args, data_args, training_args, hub_args, data) -> dict:
    args = training_args
    hub_args = hub_args or HubArguments()
    session_start = time.monotonic()
    from .data import preparation_timeout

    # Long enough for rank 0 to prepare a corpus in the launch while the others wait (pretrain.data).
    timeout = preparation_timeout(data_args) if data is None and hasattr(data_args, "max_prepare_in_launch_mb") else None
    accelerator = make_accelerator(args, timeout=timeout)
    _setup_logging(accelerator)
    resume_path = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    clear_previous_run = _prepare_output_dir(args, resume_path, accelerator, model_args.model_name_or_path)
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if resume_path is not None:  # a damaged or crafted checkpoint is refused before anything is read or written
        Progress.read(resume_path)
        check_checkpoint_layout(resume_path, accelerator)
        verify_checkpoint(resume_path, accelerator.num_processes, accelerator.scaler is not None, sharded=sharded)
    set_seed(args.seed)  # the same initial weights on every process
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (outside autocast) on tensor cores
        torch.backends.cudnn.allow_tf32 = True

    if model_args.model_name_or_path:  # a missing or malformed checkpoint is one line, before the data is read
        from minibert.convert import read_checkpoint_config

        read_checkpoint_config(model_args.model_name_or_path)
    if model_args.model_name_or_path and not getattr(data_args, "tokenizer_name", None):
        data_args.tokenizer_name = model_args.model_name_or_path  # continue with the checkpoint's vocabulary
    if data is None:
        from minibert.safety import check_writable_dir

        from .data import cache_root, prepare_pretraining_data

        check_writable_dir(cache_root(data_args), "--data_cache_dir")  # a file, /proc, read-only: one line

        data = prepare_pretraining_data(
            data_args,
            seed=args.seed,
            output_dir=None,  # data_stats.json is written once the run is known to go ahead
            accelerator=accelerator,
        )
    collator = build_collator(data_args, data.tokenizer, args.seed)
    max_seq_length = getattr(data_args, "max_seq_length", 128)
    model = build_model(model_args, data.tokenizer, max_seq_length)
    total_params, embedding_params = count_parameters(model)
    logger.info("model: %.2fM parameters (%.2fM in embeddings)", total_params / 1e6, embedding_params / 1e6)
    if args.gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.optimizer == "lamb" and accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise UserError("--optimizer lamb needs whole tensors for its trust ratio: use it with DDP, not FSDP/DeepSpeed")

    train_dataloader, eval_dataloader, streaming = build_dataloaders(data, collator, args, accelerator.device)
    stream = train_dataloader.dataset if hasattr(train_dataloader.dataset, "save_position") else None
    if getattr(accelerator, "is_fsdp2", False):
        shard_tied_head(accelerator, model)
    optimizer = build_optimizer(model, args, accelerator.device)
    if eval_dataloader is not None:
        model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(model, optimizer, train_dataloader, eval_dataloader)
    else:
        model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    prepared_model = model  # what accelerate saves and exports; `model` may be its compiled wrapper
    if args.torch_compile:
        model = torch.compile(model)

    gas = args.gradient_accumulation_steps
    global_batch = args.per_device_train_batch_size * accelerator.num_processes * gas
    steps_per_epoch = None
    if not streaming:
        steps_per_epoch = len(train_dataloader) // gas
        if steps_per_epoch == 0:
            raise UserError(
                f"the training data has {len(data.train_dataset)} sequences, fewer than one global batch of "
                f"{global_batch} (per_device_train_batch_size x processes x gradient_accumulation_steps)"
            )
    if args.max_train_steps:
        max_train_steps = args.max_train_steps
    elif steps_per_epoch:
        max_train_steps = args.num_train_epochs * steps_per_epoch
    else:
        raise UserError("streamed data has no length: give --max_train_steps")
    if args.dry_run:
        max_train_steps = min(max_train_steps, DRY_RUN_STEPS)
    num_warmup_steps = args.warmup_steps(max_train_steps)
    # Not registered with accelerate (it would pickle it): saved as JSON with each checkpoint.
    lr_scheduler = build_lr_scheduler(optimizer, args.lr_scheduler_type, num_warmup_steps, max_train_steps,
                                      decay_ratio=args.lr_decay_ratio, decay_type=args.lr_decay_type)  # fmt: skip

    progress = Progress(
        num_processes=accelerator.num_processes,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=gas,
        max_train_steps=max_train_steps,
        seed=args.seed,
        settings=run_settings(accelerator.unwrap_model(prepared_model).config, data, data_args, args, accelerator),
    )
    saved = None
    if resume_path is not None:
        saved = Progress.read(resume_path)
        check_compatible(saved, progress, resume_path)  # the model, data and optimizer it was made with
    # Every input is checked by now: only from here on may the previous run be cleared, or anything be written.
    if clear_previous_run:
        _clear_previous_run(args, accelerator)
    if accelerator.is_main_process and not args.dry_run:
        mark_output_dir(args.output_dir, CLI_NAME)
        if getattr(data, "stats", None):
            write_json(os.path.join(args.output_dir, "data_stats.json"), data.stats)
    metrics = MetricsLog(accelerator, None if args.dry_run else args.output_dir, tracking=args.with_tracking and not args.dry_run)
    if saved is not None:
        _load_state(accelerator, resume_path)
        load_scheduler_state(resume_path, lr_scheduler)
        progress = Progress(**{**asdict(saved), "max_train_steps": max_train_steps, "settings": progress.settings})
        if steps_per_epoch and progress.step_in_epoch >= steps_per_epoch:  # written by an older layout
            progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
        metrics.truncate_after(progress.completed_steps)
        logger.info("resumed from %s: step %d, epoch %d (+%d steps)", resume_path, progress.completed_steps, progress.epoch, progress.step_in_epoch)
    elif not args.dry_run:
        metrics.clear()
    if args.with_tracking and not args.dry_run:
        accelerator.init_trackers("minibert-pretrain", config=_tracker_config(model_args, data_args, args))

    logger.info(
        "pretraining on %s: %d steps of %d sequences (%d per device x %d processes x %d accumulation), "
        "%s epoch(s) of %s steps, lr %g (%s, %d warmup), %s",
        hardware_description(accelerator), max_train_steps, global_batch, args.per_device_train_batch_size,
        accelerator.num_processes, gas, math.ceil(max_train_steps / steps_per_epoch) if steps_per_epoch else "?",
        steps_per_epoch or "?", args.learning_rate, args.lr_scheduler_type, num_warmup_steps,
        f"mixed precision {accelerator.mixed_precision}",
    )  # fmt: skip

    trainer = Trainer(accelerator, model, optimizer, lr_scheduler, train_dataloader, eval_dataloader,
                      collator, args, progress, max_train_steps, steps_per_epoch, metrics, streaming)  # fmt: skip
    if stream is not None:
        trainer.stream = stream
        # O(1): back to the saved position in the stream, instead of reading and dropping the batches before it.
        trainer.stream_resumed = saved is not None and stream.load_position(resume_path, progress.epoch, trainer._stream_examples())
    with StopRequest() as stop:
        trainer.train(stop)
        if trainer.stop_reason == "signal":
            trainer.save()
            accelerator.end_training()
            logger.warning("stopped by signal %s at step %d; resume with --resume_from_checkpoint latest", trainer.stop_signal, progress.completed_steps)
            return {"status": "interrupted", "signal": trainer.stop_signal, "train_steps": progress.completed_steps}
        trainer.save()
        results = trainer.run_evaluation(DRY_RUN_EVAL_BATCHES if args.dry_run else None)

    results = {
        **results,
        "train_steps": progress.completed_steps,
        "train_epochs": trainer._fractional_epoch(),
        "train_samples": progress.samples_seen,
        "train_tokens": progress.tokens_seen,
        "train_runtime": round(progress.train_runtime, 3),  # seconds in training steps, all sessions
        "train_tokens_per_second": progress.tokens_seen / max(progress.train_runtime, 1e-9),
        "train_samples_per_second": progress.samples_seen / max(progress.train_runtime, 1e-9),
        "skipped_steps": trainer.skipped_steps,
        "num_processes": accelerator.num_processes,
        "global_batch_size": global_batch,
        "num_parameters": total_params,
        "vocab_size": accelerator.unwrap_model(prepared_model).config.vocab_size,
        "mixed_precision": accelerator.mixed_precision,
        "stopped_by_time_budget": trainer.stop_reason == "time_budget",
        "total_runtime": round(time.monotonic() - session_start, 3),
    }
    if not args.dry_run:
        _write_outputs(accelerator, prepared_model, data, data_args, args, hub_args, results, total_params, max_train_steps, num_warmup_steps)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"status": "completed", **results}


def _write_outputs(accelerator, model, data, data_args, args, hub_args, results, total_params, max_train_steps, num_warmup_steps):
    """The Hub-ready model + card, all_results.json and the curves in output_dir; the upload if asked."""
    export = _export_model(accelerator, model)
    if not accelerator.is_main_process:
        return
    from minibert.hub import push_to_hub, save_bert_twin, save_checkpoint, twin_card_section

    training = {
        "steps": results["train_steps"],
        "epochs": results["train_epochs"],
        "global batch": f"{results['global_batch_size']} sequences of up to {getattr(data_args, 'max_seq_length', '?')} tokens",
        "tokens seen": results["train_tokens"],
        "optimizer": f"{args.optimizer} (lr {args.learning_rate:g}, weight decay {args.weight_decay:g}, "
        f"{args.lr_scheduler_type} schedule, {num_warmup_steps} warmup steps)",
        "masking": f"{getattr(data_args, 'mlm_probability', 0.15):.0%} of tokens "
        f"({getattr(data_args, 'mask_replace_prob', 0.8):.0%} [MASK] / {getattr(data_args, 'random_replace_prob', 0.1):.0%} random)"
        + (", whole words" if getattr(data_args, "whole_word_mask", False) else ""),
        "mixed precision": results["mixed_precision"],
        "hardware": hardware_description(accelerator),
        "training time": f"{results['train_runtime'] / 60:.1f} min ({results['train_tokens_per_second']:.0f} tokens/s)",
        "seed": args.seed,
    }
    eval_keys = ("eval_loss", "eval_mlm_loss", "eval_mlm_accuracy", "eval_nsp_accuracy", "perplexity")
    card = model_card(
        model_id=hub_args.hub_model_id,
        model_path=args.output_dir,
        example=next(iter(fill_mask_prompts(args, data_args)), "Paris is the [MASK] of France."),
        config=export.config,
        num_parameters=total_params,
        data_description=describe_data(data_args),
        training=training,
        results={k: results[k] for k in eval_keys if k in results},
    )
    if hub_args.export_bert:
        card += twin_card_section(hub_args.hub_model_id or args.output_dir)
    save_checkpoint(export, data.tokenizer, args.output_dir, model_card=card)
    if hub_args.export_bert:
        save_bert_twin(export, data.tokenizer, args.output_dir)
    write_json(os.path.join(args.output_dir, RESULTS_FILE), results)
    plot_training_curves(os.path.join(args.output_dir, "metrics.jsonl"), os.path.join(args.output_dir, CURVES_FILE))
    logger.info("wrote the model, %s and %s to %s", RESULTS_FILE, CURVES_FILE, args.output_dir)
    if hub_args.push_to_hub:
        url = push_to_hub(args.output_dir, hub_args)
        logger.info("uploaded to %s", url)
