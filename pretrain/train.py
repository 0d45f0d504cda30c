"""A pretraining job: MLM (+ NSP) with accelerate, from one CPU to many GPUs and nodes.

`pretrain(train_file=..., max_train_steps=..., ...)` (keywords named as the flags) runs a whole job and returns its
metrics:

    accelerator (distributed.py) -> data (data.py) -> model, optimizer, schedule -> accelerator.prepare
        -> [resume] -> loop (loop.py) -> checkpoint -> evaluate -> export and report (report.py)

This module holds the set-up: small `build_*` functions, the output-folder rules, and what a resume must match.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from minibert import MiniBertConfig, MiniBertForMaskedLM, MiniBertForPreTraining
from minibert.checks import check_input_paths, check_tokenizer_fits, check_tokenizer_folder
from minibert.cli import HubArguments, UserError, argument_groups, one_line
from minibert.configuration_minibert import ARCHITECTURE_FIELDS, SIZE_FIELDS
from minibert.runs import (
    CHECKPOINTS_DIR,
    MODEL_FOLDER_FILES,
    RESULTS_FILE,
    argument_settings,
    set_cpu_threads,
    setup_logging,
)
from minibert.safety import (
    OutputLock,
    StopRequest,
    check_output_dir,
    check_previous_run,
    mark_output_dir,
    write_json,
)

from .args import GROUPS, DataArguments, ModelArguments, PretrainingArguments, RunPlan, with_checkpoint_tokenizer
from .batches import bulk_reader
from .checkpointing import (
    Progress,
    check_compatible,
    checkpoints_root,
    latest_checkpoint,
    load_scheduler_state,
    resolve_resume,
    verify_checkpoint,
)
from .collator import DataCollatorForPreTraining
from .data import PretrainingData
from .distributed import check_checkpoint_layout, is_sharded, make_accelerator, shard_tied_head
from .evaluation import eval_collator
from .loop import DRY_RUN_EVAL_BATCHES, PretrainingLoop
from .optim import SCHEDULE_TICKS, build_lr_scheduler, build_optimizer
from .report import CURVES_FILE, METRICS_FILE, MetricsLog, final_results, hardware_description, write_outputs
from .streaming import ResumableStream

logger = logging.getLogger(__name__)

DRY_RUN_STEPS = 3


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------
def build_config(model_args: ModelArguments, tokenizer, max_seq_length: int) -> MiniBertConfig:
    """A fresh model's config: the preset size, the tokenizer's vocabulary, then --config_overrides."""
    overrides = dict(model_args.overrides)
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
        problems.append(
            f"max_position_embeddings={config.max_position_embeddings} is below --max_seq_length {max_seq_length}"
        )
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and not 0 <= pad < config.vocab_size:
        problems.append(f"pad_token_id={pad} is not an id of the {config.vocab_size}-token vocabulary")
    if problems:
        raise UserError(f"--config_overrides: {'; '.join(problems)}")


def planned_architecture(model_args: ModelArguments) -> dict:
    """The config fields the model will be built with, before it is: the checkpoint's, then --config_overrides."""
    from minibert.convert import read_checkpoint_config

    base = read_checkpoint_config(model_args.model_name_or_path) if model_args.model_name_or_path else {}
    return {**base, **model_args.overrides}


def build_model(
    model_args: ModelArguments, data_args: DataArguments, tokenizer, plan: RunPlan
) -> MiniBertForPreTraining | MiniBertForMaskedLM:
    """A fresh model, or the checkpoint of --model_name_or_path (BERT ones converted): `MiniBertForPreTraining`
    (MLM + NSP heads), or `MiniBertForMaskedLM` for the plan's MLM-only objective."""
    model_class = MiniBertForPreTraining if plan.next_sentence_prediction else MiniBertForMaskedLM
    max_seq_length = data_args.max_seq_length
    if not model_args.model_name_or_path:
        return model_class(build_config(model_args, tokenizer, max_seq_length))
    from minibert.convert import load_pretrained_minibert

    # Overrides on a checkpoint can change dropout and the like; shapes must still fit its weights.
    model = load_pretrained_minibert(model_class, model_args.model_name_or_path, **model_args.overrides)
    roles = ("cls_token", "sep_token", "mask_token", "pad_token")
    check_tokenizer_fits(tokenizer, model.config, model_args.model_name_or_path, needs=roles)  # not a 5-token one
    if max_seq_length > model.config.max_position_embeddings:
        raise UserError(
            f"--max_seq_length {max_seq_length} is longer than the {model.config.max_position_embeddings} "
            f"positions of {model_args.model_name_or_path}"
        )
    check_config_fits_data(model.config, tokenizer, max_seq_length)
    return model


def build_collator(
    data_args: DataArguments, tokenizer, seed: int, plan: RunPlan | None = None
) -> DataCollatorForPreTraining:
    """Padding and MLM masking of the batches, the masks drawn per (seed, epoch, example); with a run's `plan`, its
    objective and the layout the model's fast path reads (`token_indices` / `masked_positions`, and
    `attention_groups` under grouped attention). Without one, the collator's defaults: unpadded, one attention, the
    NSP labels kept where the examples have them."""
    layout = {}
    if plan is not None:
        layout = dict(
            unpadded=plan.unpadded,
            group_attention=plan.grouped_attention,
            next_sentence_prediction=plan.next_sentence_prediction,
        )
    return DataCollatorForPreTraining(
        tokenizer,
        mlm_probability=data_args.mlm_probability,
        mask_replace_prob=data_args.mask_replace_prob,
        random_replace_prob=data_args.random_replace_prob,
        whole_word_mask=data_args.whole_word_mask,
        pad_to_multiple_of=data_args.pad_to_multiple_of,
        seed=seed,
        **layout,
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, of which embeddings); tied weights counted once."""
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in model.parameters()), embeddings  # `parameters()` yields a shared one once


def build_dataloaders(
    data: PretrainingData,
    collator,
    args: PretrainingArguments,
    device: torch.device,
    streaming: bool,
    eval_mlm_probability: float | None = None,
):
    """Train (shuffled, full batches; a stream is read in order) and eval dataloaders; `accelerator.prepare` shards
    them per process (a stream split across processes is already this process's share, laid out so that
    accelerate keeps all of it: `streaming.ResumableStream`). `streaming`: the run plan's data mode."""
    workers = args.dataloader_num_workers
    if workers is None:  # the default: 2 per process on GPU, 0 on CPU
        workers = 2 if device.type == "cuda" else 0
    common = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Not persistent: workers take a fresh copy of the collator (and its epoch) every epoch.
        persistent_workers=False,
    )
    dataset = data.train_dataset
    if streaming and hasattr(dataset, "load_state_dict"):  # a `datasets` stream: checkpoints save its position
        dataset = ResumableStream(dataset, record_every=args.per_device_train_batch_size)
        common["num_workers"] = 0  # the positions are recorded where the stream is read: in this process
    else:
        dataset = bulk_reader(dataset)  # a batch read from the Arrow cache in one `take`, no dict per example
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
            bulk_reader(data.eval_dataset),
            batch_size=args.per_device_eval_batch_size,
            shuffle=False,
            collate_fn=eval_collator(collator, eval_mlm_probability),
            generator=torch.Generator().manual_seed(args.seed),
            **common,
        )
    return train, evaluation


DATA_STATS_FILE = "data_stats.json"  # the data's counts (`PretrainingData.stats`)
# What a pretraining run writes in output_dir; a folder holding anything else is not ours to write into.
OUR_FILES = {
    CHECKPOINTS_DIR,
    "runs",
    RESULTS_FILE,
    CURVES_FILE,
    METRICS_FILE,
    DATA_STATS_FILE,
    *MODEL_FOLDER_FILES,
}
CLI_NAME = "pretraining"  # as output folders record it (`minibert.safety.mark_output_dir`)


def _prepare_output_dir(args: PretrainingArguments, resume_path: str | None, model_path: str | None = None) -> bool:
    """Refuse an output_dir that is not ours to write, or that holds a run we were not told to continue or replace.

    Deletes nothing: returns whether the previous run must be cleared (`_clear_previous_run`, once every input has
    been checked)."""
    if args.dry_run:
        return False
    out = args.output_dir
    check_output_dir(
        out, CLI_NAME, OUR_FILES, evidence={CHECKPOINTS_DIR, RESULTS_FILE, METRICS_FILE}, source=model_path
    )
    existing = latest_checkpoint(out) if resume_path is None else None
    found = [os.path.relpath(existing, out)] if existing is not None else []
    return check_previous_run(
        out,
        CLI_NAME,
        found,
        resuming=resume_path is not None,
        overwrite=args.overwrite_output_dir,
        resume_keyword="latest",
    )


def _clear_previous_run(args: PretrainingArguments, accelerator) -> None:
    """--overwrite_output_dir: the previous run's checkpoints and TensorBoard logs go (its model is replaced at the end)."""
    if accelerator.is_main_process:
        shutil.rmtree(checkpoints_root(args.output_dir), ignore_errors=True)
        shutil.rmtree(os.path.join(args.output_dir, "runs"), ignore_errors=True)  # the old run's TensorBoard logs
    accelerator.wait_for_everyone()


def _load_state(accelerator, path: str) -> None:
    """`accelerator.load_state` on a checkpoint `verify_checkpoint` passed; what still fails names the checkpoint."""
    try:
        accelerator.load_state(path)
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError, OSError) as e:
        reason = one_line(e)[:300]
        raise UserError(
            f"cannot restore the training state in {path} ({reason}); resume from an earlier checkpoint"
        ) from None


# Config fields that change what a run computes: a resume must build the checkpoint's model.
_MODEL_SETTINGS = (
    *SIZE_FIELDS,
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    *ARCHITECTURE_FIELDS,
)
# Every other field of ModelArguments, DataArguments and PretrainingArguments must match the checkpoint's run on
# resume (`run_settings`): a new flag is checked unless it joins this list with its reason.
RESUMABLE = frozenset(
    {
        # The model: a resume loads the checkpoint's weights; its architecture is compared field by field through
        # the config (`model.*` above), however the flags spelled it.
        "model_name_or_path",
        "model_size",
        "config_overrides",
        # The tokenizer: compared by its fingerprint (the vocabulary itself), however it was named or trained.
        "tokenizer_name",
        "vocab_size",
        "lowercase",
        "min_frequency",
        "tokenizer_train_documents",
        # Where things are and how the data is prepared, not what it is (the cache is keyed on its content).
        "data_cache_dir",
        "preprocessing_num_workers",
        "overwrite_cache",
        "max_prepare_in_launch_mb",
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        # Padding only: masked positions change no loss or gradient.
        "pad_to_multiple_of",
        # Checked by `checkpointing.check_compatible` with their own message (batch shape, data order), and
        # `mixed_precision` through the accelerator's effective value (`run_settings`).
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "seed",
        "mixed_precision",
        # A recipe's values land in the fields above, which are compared themselves.
        "recipe",
        # The run's length: a finished run may be continued for more steps, epochs or minutes.
        "num_train_epochs",
        "max_train_steps",
        "time_budget",
        # Around training, not in it: logs, checkpoints' frequency and count, trackers, the final prompts.
        "logging_steps",
        "eval_steps",
        "per_device_eval_batch_size",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "with_tracking",
        "report_to",
        "dry_run",
        "fill_mask_prompts",
        # Speed, not results: compilation, activation checkpointing, data-loader workers.
        "torch_compile",
        "gradient_checkpointing",
        "dataloader_num_workers",
    }
)
_PATHS = ("train_file", "validation_file")  # compared as real paths: the same file named from elsewhere is the same


def run_settings(
    config,
    model_args: ModelArguments,
    data_args: DataArguments,
    args: PretrainingArguments,
    *,
    tokenizer,
    train_sequences: int | None,
    mixed_precision: str,
) -> dict:
    """What the run is made with, as JSON values: the model's shape and architecture, the tokenizer, and every
    argument not in `RESUMABLE` (data, masking, optimizer, schedule...); saved with every checkpoint and compared on
    resume (`checkpointing.check_compatible`)."""
    settings = {f"model.{k}": getattr(config, k) for k in _MODEL_SETTINGS if hasattr(config, k)}
    settings.update(argument_settings([model_args, data_args, args], RESUMABLE, _PATHS))
    settings["mixed_precision"] = mixed_precision
    try:
        from .tokenizer import tokenizer_fingerprint

        settings["tokenizer"] = tokenizer_fingerprint(tokenizer)
    except (AttributeError, ImportError):  # not a fast tokenizer
        settings["tokenizer"] = f"{type(tokenizer).__name__} of {len(tokenizer)} tokens"
    if train_sequences is not None:  # not streamed
        settings["train_sequences"] = train_sequences
    return json.loads(json.dumps(settings, default=str))  # as a checkpoint holds them (tuples as lists, ...)


def _tracker_config(*arg_groups) -> dict:
    """Hyperparameters as the flat scalars TensorBoard's hparams accept."""
    config = {}
    for group in arg_groups:
        for key, value in asdict(group).items():
            if key != "hub_token":  # never a secret in the trackers
                config[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


# --------------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------------
def pretrain(*, data: PretrainingData | None = None, **options) -> dict:
    """Run a pretraining job; returns the final metrics (what all_results.json holds, plus `status`).

    `options`: the flags by name (`pretrain(train_file=["c.txt"], max_train_steps=100)`), typed and checked as the
    CLI's (`minibert.cli.argument_groups`), without its recipe or demo defaults. `status` is "completed" (also after
    --time_budget), or "interrupted" after SIGTERM/SIGINT (then `signal` holds its number, a checkpoint was saved,
    and nothing was exported). `data` (a `PretrainingData`) skips `prepare_pretraining_data`, for callers that built
    it already. While it runs, output_dir is locked against a second writer (`minibert.safety.OutputLock`).
    """
    return run(*argument_groups(GROUPS, options, "pretrain()"), data=data)


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: PretrainingArguments,
    hub_args: HubArguments | None = None,
    data: PretrainingData | None = None,
) -> dict:
    """`pretrain` on argument groups already parsed (the CLI's path)."""
    with OutputLock(training_args.output_dir, enabled=is_main_process() and not training_args.dry_run):
        return _pretrain(model_args, data_args, training_args, hub_args or HubArguments(), data)


def is_main_process() -> bool:
    """Whether this is the launch's main process (rank 0), known before accelerate is set up."""
    return int(os.environ.get("RANK", "0")) == 0


def _pretrain(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: PretrainingArguments,
    hub_args: HubArguments,
    data: PretrainingData | None,
) -> dict:
    session_start = time.monotonic()
    data_args = with_checkpoint_tokenizer(model_args, data_args)
    accelerator, resume_path, clear_previous_run = _start(model_args, data_args, args, hub_args, data is not None)
    plan = RunPlan.decide(data_args, args, accelerator.device)
    if data is None:
        data = _prepare_data(data_args, args, accelerator)
    run = _build(model_args, data_args, args, data, accelerator, plan)
    loop = _begin(run, data, model_args, data_args, args, accelerator, resume_path, clear_previous_run, plan)
    if args.with_tracking and not args.dry_run:
        accelerator.init_trackers("minibert-pretrain", config=_tracker_config(model_args, data_args, args))
    with StopRequest() as stop:
        loop.train(stop)
        if loop.stop_reason == "signal":
            loop.save()
            accelerator.end_training()
            logger.warning(
                "stopped by signal %s at step %d; resume with --resume_from_checkpoint latest",
                loop.stop_signal,
                loop.progress.completed_steps,
            )
            return {"status": "interrupted", "signal": loop.stop_signal, "train_steps": loop.progress.completed_steps}
        loop.save()
        evaluation = loop.run_evaluation(DRY_RUN_EVAL_BATCHES if args.dry_run else None)
    results = final_results(loop, evaluation, run.total_params, session_start)
    if not args.dry_run:
        write_outputs(
            accelerator, run.prepared_model, data, data_args, args, hub_args, results, run.num_warmup_steps, plan
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"status": "completed", **results}


def _start(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: PretrainingArguments,
    hub_args: HubArguments,
    prepared: bool,
):
    """The accelerator, logging, and every check of the output folder and the checkpoint to resume, before any data
    is read: returns (accelerator, the checkpoint to resume or None, whether the previous run must be cleared)."""
    from .data import preparation_timeout

    # Long enough for rank 0 to prepare a corpus in the launch while the others wait (pretrain.data).
    accelerator = make_accelerator(args, timeout=None if prepared else preparation_timeout(data_args))
    setup_logging(accelerator.is_local_main_process)
    set_cpu_threads()
    resume_path = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    clear_previous_run = _prepare_output_dir(args, resume_path, model_args.model_name_or_path)
    if resume_path is not None:  # a damaged or crafted checkpoint is refused before anything is read or written
        Progress.read(resume_path)
        check_checkpoint_layout(resume_path, accelerator)
        verify_checkpoint(
            resume_path, accelerator.num_processes, accelerator.scaler is not None, sharded=is_sharded(accelerator)
        )
    set_seed(args.seed)  # the same initial weights on every process
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (outside autocast) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    # A missing or malformed checkpoint is one line, and --export_bert true of a model with no BERT twin is refused,
    # before the data is read, not after the run.
    hub_args.check_twin(planned_architecture(model_args))
    check_input_paths(data_args.train_file, "--train_file")  # /dev/null, a named pipe: said as such
    check_input_paths(data_args.validation_file, "--validation_file")
    tokenizer = data_args.tokenizer_name  # the checkpoint's unless --tokenizer_name (`with_checkpoint_tokenizer`)
    if tokenizer:  # a folder without tokenizer files: one line naming the flag that chose it
        given_as = "--model_name_or_path" if tokenizer == model_args.model_name_or_path else "--tokenizer_name"
        check_tokenizer_folder(
            tokenizer,
            given_as,
            "give a tokenizer saved with save_pretrained (a folder or a Hub id) as --tokenizer_name",
        )
    if args.optimizer == "lamb" and is_sharded(accelerator):
        raise UserError("--optimizer lamb needs whole tensors for its trust ratio: use it with DDP, not FSDP/DeepSpeed")
    if args.batch_size_warmup_ratio and accelerator.distributed_type.value == "DEEPSPEED":
        raise UserError("--batch_size_warmup_ratio varies the accumulation of a step, which DeepSpeed's engine fixes")
    return accelerator, resume_path, clear_previous_run


def _prepare_data(data_args: DataArguments, args: PretrainingArguments, accelerator) -> PretrainingData:
    from minibert.safety import check_writable_dir

    from .data import cache_root, prepare

    check_writable_dir(cache_root(data_args), "--data_cache_dir")  # a file, /proc, read-only: one line
    # data_stats.json is written once the run is known to go ahead (`_begin`).
    return prepare(data_args, seed=args.seed, accelerator=accelerator)


@dataclass
class _Run:
    """What `_build` made for the loop."""

    model: torch.nn.Module  # what the loop calls: the prepared model, or its compiled wrapper
    prepared_model: torch.nn.Module  # what accelerate saves and exports
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    train_dataloader: DataLoader
    eval_dataloader: DataLoader | None
    collator: DataCollatorForPreTraining
    max_train_steps: int
    num_warmup_steps: int
    total_params: int
    stream: ResumableStream | None  # a streamed run's training set: checkpoints save its position


def _build(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: PretrainingArguments,
    data: PretrainingData,
    accelerator,
    plan: RunPlan,
) -> _Run:
    """Model, optimizer, dataloaders and schedule, prepared by accelerate."""
    collator = build_collator(data_args, data.tokenizer, args.seed, plan)
    model = build_model(model_args, data_args, data.tokenizer, plan)
    total_params, embedding_params = count_parameters(model)
    logger.info("model: %.2fM parameters (%.2fM in embeddings)", total_params / 1e6, embedding_params / 1e6)
    if args.gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable.
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train_dataloader, eval_dataloader = build_dataloaders(
        data, collator, args, accelerator.device, plan.streaming, data_args.eval_mlm_probability
    )
    # Taken before `prepare`, which wraps it when there are several processes (`IterableDatasetShard`).
    stream = train_dataloader.dataset if isinstance(train_dataloader.dataset, ResumableStream) else None
    if getattr(accelerator, "is_fsdp2", False):
        shard_tied_head(accelerator, model)
    optimizer = build_optimizer(model, args, accelerator.device)
    loaders = [train_dataloader] + ([eval_dataloader] if eval_dataloader is not None else [])
    model, optimizer, *loaders = accelerator.prepare(model, optimizer, *loaders)
    train_dataloader, eval_dataloader = loaders[0], (loaders[1] if len(loaders) > 1 else None)
    compiled = torch.compile(model) if args.torch_compile else model
    max_train_steps = _max_train_steps(args, data, train_dataloader, plan.streaming, accelerator.num_processes)
    if args.schedule_by == "time":  # the schedule's "steps" are ticks of the time budget
        num_warmup_steps = round((args.warmup_ratio or 0.0) * SCHEDULE_TICKS)
        schedule_steps = SCHEDULE_TICKS
    else:
        num_warmup_steps = args.warmup_steps(max_train_steps)
        schedule_steps = max_train_steps
    lr_scheduler = build_lr_scheduler(
        optimizer,
        args.lr_scheduler_type,
        num_warmup_steps,
        schedule_steps,
        decay_ratio=args.lr_decay_ratio,
        decay_type=args.lr_decay_type,
    )
    return _Run(
        compiled,
        model,
        optimizer,
        lr_scheduler,
        train_dataloader,
        eval_dataloader,
        collator,
        max_train_steps,
        num_warmup_steps,
        total_params,
        stream,
    )


def _max_train_steps(
    args: PretrainingArguments, data: PretrainingData, train_dataloader, streaming: bool, num_processes: int
) -> int:
    """--max_train_steps, else the epochs' steps; under --schedule_by time without it, until the budget ends."""
    gas = args.gradient_accumulation_steps
    steps_per_epoch = None if streaming else len(train_dataloader) // gas
    if steps_per_epoch == 0:
        raise UserError(
            f"the training data has {len(data.train_dataset)} sequences, fewer than one global batch of "
            f"{args.per_device_train_batch_size * num_processes * gas} "
            "(per_device_train_batch_size x processes x gradient_accumulation_steps)"
        )
    if args.max_train_steps:
        steps = args.max_train_steps
    elif args.schedule_by == "time":
        steps = 2**62  # the time budget ends the run
    elif steps_per_epoch:
        steps = args.num_train_epochs * steps_per_epoch
    else:
        raise UserError("streamed data has no length: give --max_train_steps (or --schedule_by time)")
    return min(steps, DRY_RUN_STEPS) if args.dry_run else steps


def _begin(
    run: _Run,
    data: PretrainingData,
    model_args: ModelArguments,
    data_args: DataArguments,
    args: PretrainingArguments,
    accelerator,
    resume_path: str | None,
    clear_previous_run: bool,
    plan: RunPlan,
) -> PretrainingLoop:
    """The loop at its first step: a fresh run, or the checkpoint's state restored. Every input is checked by
    now: only from here on may the previous run be cleared, or anything be written."""
    progress = Progress(
        num_processes=accelerator.num_processes,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_train_steps=run.max_train_steps,
        seed=args.seed,
        settings=run_settings(
            accelerator.unwrap_model(run.prepared_model).config,
            model_args,
            data_args,
            args,
            tokenizer=data.tokenizer,
            train_sequences=None if plan.streaming else len(data.train_dataset),
            mixed_precision=accelerator.mixed_precision,
        ),
    )
    saved = Progress.read(resume_path) if resume_path is not None else None
    if saved is not None:
        check_compatible(saved, progress, resume_path)  # the model, data and optimizer it was made with
    _start_writing(data, args, accelerator, clear_previous_run)
    metrics = MetricsLog(
        accelerator, None if args.dry_run else args.output_dir, tracking=args.with_tracking and not args.dry_run
    )
    if saved is not None:
        progress = _restore(run, saved, progress, metrics, accelerator, resume_path)
    elif not args.dry_run:
        metrics.clear()
    loop = PretrainingLoop(
        accelerator=accelerator,
        model=run.model,
        optimizer=run.optimizer,
        lr_scheduler=run.lr_scheduler,
        train_dataloader=run.train_dataloader,
        eval_dataloader=run.eval_dataloader,
        collator=run.collator,
        args=args,
        progress=progress,
        metrics=metrics,
        max_train_steps=run.max_train_steps,
        plan=plan,
        stream=run.stream,
    )
    if run.stream is not None and saved is not None:
        # O(1): back to the saved position in the stream, instead of reading and dropping the batches before it.
        loop.stream_resumed = run.stream.load_position(resume_path, progress.epoch, loop.stream_examples())
    _log_plan(loop, accelerator, args, run)
    return loop


def _start_writing(data: PretrainingData, args: PretrainingArguments, accelerator, clear_previous_run: bool) -> None:
    """The run's first writes, once every input has been checked: the previous run cleared (--overwrite_output_dir),
    the folder marked as this CLI's, the data statistics."""
    if clear_previous_run:
        _clear_previous_run(args, accelerator)
    if accelerator.is_main_process and not args.dry_run:
        mark_output_dir(args.output_dir, CLI_NAME)
        if data.stats:
            write_json(os.path.join(args.output_dir, DATA_STATS_FILE), data.stats)


def _restore(
    run: _Run, saved: Progress, progress: Progress, metrics: MetricsLog, accelerator, resume_path: str
) -> Progress:
    """The checkpoint's training state (model, optimizer, RNGs, LR schedule) restored and the metrics log cut back
    to its step; returns its progress, with this run's step limit and settings."""
    _load_state(accelerator, resume_path)
    load_scheduler_state(resume_path, run.lr_scheduler)
    progress = dataclasses.replace(saved, max_train_steps=run.max_train_steps, settings=progress.settings)
    metrics.truncate_after(progress.completed_steps)
    logger.info(
        "resumed from %s: step %d, epoch %d (+%d steps)",
        resume_path,
        progress.completed_steps,
        progress.epoch,
        progress.step_in_epoch,
    )
    return progress


def _log_plan(loop: PretrainingLoop, accelerator, args: PretrainingArguments, run: _Run) -> None:
    global_batch = loop.per_window_batch * args.gradient_accumulation_steps
    length = f"{args.time_budget:g} minutes" if args.schedule_by == "time" else f"{run.max_train_steps} steps"
    logger.info(
        "pretraining on %s: %s of %d sequences (%d per device x %d processes x %d accumulation%s), lr %g (%s over %s, "
        "%d warmup), mixed precision %s",
        hardware_description(accelerator),
        length,
        global_batch,
        args.per_device_train_batch_size,
        accelerator.num_processes,
        args.gradient_accumulation_steps,
        ", batch-size warmup" if args.batch_size_warmup_ratio else "",
        args.learning_rate,
        args.lr_scheduler_type,
        args.schedule_by,
        run.num_warmup_steps,
        accelerator.mixed_precision,
    )
    plan = loop.plan
    logger.info(
        "objective %s; MLM head %s, %s layout, %s%s",
        "masked-LM + next-sentence prediction" if plan.next_sentence_prediction else "masked-LM only",
        "at the masked positions only" if plan.sparse_head else "on every position",
        "unpadded" if plan.unpadded else "padded",
        "attention per group of similar lengths" if plan.grouped_attention else "attention on the padded batch",
        f"; MFU in the logs is against the {loop.peak_tflops:g} TFLOP/s dense bf16 peak of "
        f"{torch.cuda.get_device_name(accelerator.device)}"
        if loop.peak_tflops
        else "",
    )
