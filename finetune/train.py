"""Fine-tune a MiniBERT (or transformers BERT) checkpoint on text classification (single- or multi-label) or
regression.

    finetune(model_name_or_path=..., train_file=..., output_dir=..., ...) -> metrics   # keywords named as the flags

reads the data (`finetune.data`), builds the classifier on the pretrained encoder, trains it with transformers'
`Trainer` (which runs on accelerate: `accelerate launch -m finetune ...` works as is), keeps the best checkpoint
by validation score, and writes a Hub-ready checkpoint to `output_dir`:

    output_dir/
      model.safetensors, config.json (label names, auto_map), *_minibert.py, tokenizer files, README.md (card)
      all_results.json         train_* / eval_* / test_* metrics
      predict_results.jsonl    one line per --test_file row: text, predicted label, score
      checkpoints/             Trainer checkpoints (for --resume_from_checkpoint; never uploaded)

A resume continues the same run or is refused naming what changed (`run_settings`, kept in each checkpoint's
trainer_state.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import expit, softmax
from transformers import TrainerCallback

from minibert.card import Cards, FinetuningCardInfo, describe_size, render_cards
from minibert.checks import check_tokenizer_fits, check_tokenizer_folder
from minibert.cli import HubArguments, UserError, argument_groups, one_line, parse_args
from minibert.runs import (
    CHECKPOINTS_DIR,
    DEFAULT_PRETRAINED_DIR,
    MODEL_FOLDER_FILES,
    RESULTS_FILE,
    needs_cpu_process_group,
    set_cpu_threads,
    setup_logging,
)
from minibert.safety import (
    OutputLock,
    StopRequest,
    check_output_dir,
    check_previous_run,
    is_disk_full,
    mark_output_dir,
    non_finite_parameters,
    read_json_object,
    write_json,
)

from .args import GROUPS, DataArguments, FinetuneArguments, ModelArguments
from .checkpointing import (
    RunSettings,
    check_checkpoint_fits,
    check_resume_settings,
    data_settings,
    remove_incomplete_checkpoints,
    resolve_resume,
    run_settings,
    saved_settings,
)
from .data import (
    SPLITS,
    Examples,
    LabelSpace,
    build_examples,
    check_columns,
    drop_incomplete_rows,
    infer_label_space,
    load_splits,
    resolve_text_columns,
    split_off_validation,
    tokenize_examples,
)
from .demo import DEMO_EPOCHS, fresh_model, write_demo_data
from .metrics import BEST_METRIC, MULTI_LABEL, REGRESSION, SINGLE_LABEL, build_compute_metrics, metric_names

logger = logging.getLogger("finetune")

PREDICTIONS_FILE = "predict_results.jsonl"
DEMO_DATA_DIR = "demo_data"
# What a previous fine-tuning run leaves in output_dir; anything else there means it is not ours to write into.
OUR_FILES = {
    CHECKPOINTS_DIR,
    RESULTS_FILE,
    PREDICTIONS_FILE,
    DEMO_DATA_DIR,
    *MODEL_FOLDER_FILES,
}
CLI_NAME = "fine-tuning"  # as output folders record it (`minibert.safety.mark_output_dir`)


# ---------------------------------------------------------------------------------------------------------------
# Output directory


def check_output_dir_is_ours(output_dir: str, model_path: str | None = None) -> None:
    """`minibert.safety.check_output_dir`'s policy (a new or empty folder, or an earlier fine-tuning run's; never
    the checkpoint being fine-tuned), with the classifier's own check of a config.json there. Deletes nothing."""
    check_output_dir(
        output_dir,
        CLI_NAME,
        OUR_FILES,
        evidence={CHECKPOINTS_DIR, RESULTS_FILE},
        source=model_path,
        inspect=_check_classifier_folder,
    )


def _check_classifier_folder(output_dir: str) -> None:
    """A config.json in output_dir must be a fine-tuned classifier's (not a pretrained model's, say)."""
    config_file = os.path.join(output_dir, "config.json")
    if not os.path.isfile(config_file):
        return
    config = read_json_object(config_file, "choose a new or empty --output_dir")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not any(
        isinstance(a, str) and a.endswith("ForSequenceClassification") for a in architectures
    ):
        raise UserError(
            f"--output_dir {output_dir} holds a {', '.join(map(str, architectures)) or 'model'} checkpoint, not a "
            "fine-tuned classifier; choose a new or empty folder"
        )


def previous_run(output_dir: str) -> list[str]:
    """What of an earlier fine-tuning run output_dir holds: its results, its model, its Trainer checkpoints."""
    found = [n for n in (RESULTS_FILE, "model.safetensors") if os.path.isfile(os.path.join(output_dir, n))]
    checkpoints = os.path.join(output_dir, CHECKPOINTS_DIR)
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        found.append(CHECKPOINTS_DIR)
    return found


def clear_previous_run(output_dir: str) -> None:
    """A new run (not a resume) in an earlier run's folder: its Trainer checkpoints and results go. Called only once
    every input has been checked."""
    checkpoints = os.path.join(output_dir, CHECKPOINTS_DIR)
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        logger.warning(
            "starting afresh: removing the previous run's %s (resume it with --resume_from_checkpoint last)",
            checkpoints,
        )
        shutil.rmtree(checkpoints)
    for name in (RESULTS_FILE, PREDICTIONS_FILE):
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            os.remove(path)


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class PreparedData:
    labels: LabelSpace
    text_columns: tuple[str, str | None]
    splits: dict[str, Examples]  # train / validation / test (those that exist)
    description: str


def prepare_data(data_args: DataArguments, seed: int, cache_dir: str | None = None) -> PreparedData:
    """Read, check and encode every split (no tokenizer yet)."""
    raw = load_splits(data_args, cache_dir)
    text_columns = resolve_text_columns(raw["train"], data_args.text_column, data_args.text_pair_column)
    for name, split in raw.items():
        check_columns(split, text_columns, data_args.label_column, needs_labels=name != "test")
        if name != "test":
            raw[name] = drop_incomplete_rows(split, text_columns, data_args.label_column)
    labels = infer_label_space(raw["train"], data_args.label_column, data_args.problem_type)
    if "validation" not in raw and data_args.validation_split_percentage > 0:
        raw["train"], raw["validation"] = split_off_validation(
            raw["train"], data_args.validation_split_percentage, seed
        )
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    splits = {
        name: build_examples(split, text_columns, data_args.label_column, labels, limits[name])
        for name, split in raw.items()
    }
    if data_args.dataset_name:
        description = f"the dataset `{data_args.dataset_name}`" + (
            f" (`{data_args.dataset_config_name}`)" if data_args.dataset_config_name else ""
        )
    else:
        description = f"`{os.path.basename(data_args.train_file)}`"
    kind = {
        SINGLE_LABEL: f"{labels.num_labels} classes",
        MULTI_LABEL: f"{labels.num_labels} labels (multi-label)",
        REGRESSION: "regression",
    }[labels.problem_type]
    logger.info(
        "data: %s; text %s; %s; %s",
        description,
        " + ".join(c for c in text_columns if c),
        kind
        + (f" ({', '.join(labels.names[:10])}{', ...' if len(labels.names) > 10 else ''})" if labels.names else ""),
        ", ".join(f"{name} {len(ex)} rows" for name, ex in splits.items()),
    )
    return PreparedData(labels, text_columns, splits, description)


# ---------------------------------------------------------------------------------------------------------------
# Model


def load_model(model_args: ModelArguments, labels: LabelSpace, training_texts: list[str], seed: int):
    """(model, tokenizer, base model description) with a classification head for `labels`."""
    from transformers import set_seed

    from minibert import MiniBertForSequenceClassification
    from minibert.convert import load_pretrained_minibert

    head = dict(
        num_labels=labels.num_labels,
        id2label=labels.id2label,
        label2id=labels.label2id,
        problem_type=labels.problem_type,
    )
    if model_args.classifier_dropout is not None:
        head["classifier_dropout"] = model_args.classifier_dropout
    path = model_args.model_name_or_path
    if path is None and os.path.isfile(os.path.join(DEFAULT_PRETRAINED_DIR, "config.json")):
        path = DEFAULT_PRETRAINED_DIR
        logger.info("fine-tuning the pretrained checkpoint in %s", path)
    set_seed(seed)  # the classifier head (or the whole fresh model) starts from this seed
    if path is None:
        logger.warning(
            "no --model_name_or_path and no pretrained checkpoint in %s (run `minibert-pretrain` first): "
            "fine-tuning a randomly initialised tiny model with a tokenizer trained on the training texts",
            DEFAULT_PRETRAINED_DIR,
        )
        model, tokenizer = fresh_model(training_texts, MiniBertForSequenceClassification, seed=seed, **head)
        return model, tokenizer, "a randomly initialised tiny MiniBERT"

    _check_head_fits(path, labels, model_args.ignore_mismatched_sizes)
    model = load_pretrained_minibert(
        MiniBertForSequenceClassification,
        path,
        **head,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
    )
    tokenizer = _load_tokenizer(path, model_args, model.config)
    base = f"`{path}`"
    if model_args.from_scratch:
        set_seed(seed)
        model = MiniBertForSequenceClassification(model.config)
        base = f"random weights in the shape of `{path}` (a from-scratch baseline)"
        logger.info("--from_scratch: %s's config and tokenizer, random weights", path)
    return model, tokenizer, base


def _check_head_fits(path: str, labels: LabelSpace, ignore_mismatched_sizes: bool) -> None:
    """A classifier checkpoint's head must have this task's number of outputs, unless it is to be replaced."""
    from minibert.convert import read_checkpoint_config

    source = read_checkpoint_config(path)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in source.get("architectures") or [])
    source_labels = len(source.get("id2label") or {}) or source.get("num_labels") or 2  # transformers' default
    if is_classifier and source_labels != labels.num_labels and not ignore_mismatched_sizes:
        raise UserError(
            f"{path} is a classifier with {source_labels} outputs and this task needs {labels.num_labels}; pass "
            "--ignore_mismatched_sizes to fine-tune it with a new classification head"
        )


def _load_tokenizer(path: str, model_args: ModelArguments, config):
    """The checkpoint's tokenizer; it must fit the model (`minibert.checks.check_tokenizer_fits`)."""
    from transformers import AutoTokenizer

    check_tokenizer_folder(
        path, "--model_name_or_path", "save the tokenizer the model was trained with into it (save_pretrained)"
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, cache_dir=model_args.cache_dir, revision=model_args.model_revision
        )
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot load the tokenizer of {path}: {one_line(e)[:400]}") from None
    check_tokenizer_fits(tokenizer, config, path, needs=("cls_token", "sep_token", "pad_token"))
    return tokenizer


def default_learning_rate(model) -> float:
    # BERT-base (hidden 768) fine-tunes at 5e-5; Adam's best rate grows as the width shrinks (roughly 1 / width),
    # and a tiny model at 5e-5 barely moves in a few epochs. 3e-4 for hidden 128, capped at 1e-3.
    return min(1e-3, 5e-5 * 768 / model.config.hidden_size)


# ---------------------------------------------------------------------------------------------------------------
# Trainer


def build_training_arguments(
    args: FinetuneArguments, *, has_eval: bool, best_metric: str, learning_rate: float, epochs: float
):
    from transformers import TrainingArguments

    strategy = "steps" if args.eval_steps else "epoch"
    return TrainingArguments(
        output_dir=os.path.join(args.output_dir, CHECKPOINTS_DIR),
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,  # a float in [0, 1) is a fraction of the training steps
        lr_scheduler_type=args.lr_scheduler_type,
        num_train_epochs=epochs,
        max_steps=args.max_train_steps or -1,
        eval_strategy=strategy if has_eval else "no",
        save_strategy=strategy,
        eval_steps=args.eval_steps,
        save_steps=args.eval_steps,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model=best_metric if has_eval else None,
        greater_is_better=best_metric != "loss",
        logging_steps=args.logging_steps,
        report_to=args.report_to,
        seed=args.seed,
        bf16=args.bf16,
        fp16=args.fp16,
        use_cpu=needs_cpu_process_group(),
        ddp_find_unused_parameters=False,  # every parameter takes part in every forward pass
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def pick_best_metric(requested: str | None, problem_type: str, num_labels: int) -> str:
    available = metric_names(problem_type, num_labels) + ["loss"]
    metric = requested or BEST_METRIC[problem_type]
    metric = metric.removeprefix("eval_")
    if metric not in available:
        raise UserError(f"--metric_for_best_model {requested}: this task reports {', '.join(available)}")
    return metric


# ---------------------------------------------------------------------------------------------------------------
# Predictions


def decode_predictions(logits: np.ndarray, labels: LabelSpace) -> list[dict]:
    """Per row: {"label", "score"} (classes), {"labels", "scores"} (multi-label) or {"score"} (regression)."""
    logits = np.asarray(logits, dtype=np.float64)
    if labels.problem_type == REGRESSION:
        return [{"score": float(v)} for v in logits.reshape(-1)]
    if labels.problem_type == MULTI_LABEL:
        probabilities = expit(logits)  # the sigmoid
        return [
            {
                "labels": [labels.names[i] for i in np.flatnonzero(p > 0.5)],
                "scores": {name: round(float(s), 6) for name, s in zip(labels.names, p)},
            }
            for p in probabilities
        ]
    probabilities = softmax(logits, axis=-1)
    best = probabilities.argmax(-1)
    return [{"label": labels.names[i], "score": round(float(p[i]), 6)} for i, p in zip(best, probabilities)]


def write_predictions(path: str, examples: Examples, predictions: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, prediction in enumerate(predictions):
            row = {"index": i, "text": examples.texts[i]}
            if examples.text_pairs is not None:
                row["text_pair"] = examples.text_pairs[i]
            row.update(prediction)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def show_examples(examples: Examples, predictions: list[dict], labels: LabelSpace, n: int) -> None:
    if n <= 0:
        return
    print(f"\nExample predictions ({min(n, len(predictions))} of {len(predictions)}):")
    for i in range(min(n, len(predictions))):
        text = examples.texts[i] + (f" || {examples.text_pairs[i]}" if examples.text_pairs is not None else "")
        text = text if len(text) <= 90 else text[:87] + "..."
        p = predictions[i]
        if "label" in p:
            shown = f"{p['label']} ({p['score']:.2f})"
        elif "labels" in p:
            shown = ", ".join(p["labels"]) or "(none)"
        else:
            shown = f"{p['score']:.3f}"
        truth = ""
        if examples.labels is not None:
            truth = f"   [true: {_label_text(examples.labels[i], labels)}]"
        print(f"  {shown:<24} {text}{truth}")
    print()


def _label_text(encoded, labels: LabelSpace) -> str:
    if labels.problem_type == REGRESSION:
        return f"{encoded:.3f}"
    if labels.problem_type == MULTI_LABEL:
        return ", ".join(n for n, v in zip(labels.names, encoded) if v > 0.5) or "(none)"
    return labels.names[encoded]


def _clean(metrics: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}


# ---------------------------------------------------------------------------------------------------------------
# The run


def use_demo_data(data_args: DataArguments, output_dir: str, state) -> DataArguments:
    """No data arguments: write the demo task's CSV files under output_dir (rank 0) and point the arguments there."""
    demo_dir = os.path.join(output_dir, DEMO_DATA_DIR)
    if state.is_main_process:
        write_demo_data(demo_dir, seed=0)
        logger.info(
            "no data arguments: running the built-in demo (which part of Python's language reference is a "
            "sentence from?), data written to %s",
            demo_dir,
        )
    state.wait_for_everyone()
    return dataclasses.replace(
        data_args, **{f"{split}_file": os.path.join(demo_dir, f"{split}.csv") for split in SPLITS}
    )


def build_trainer(model, tokenizer, tokenized: dict, labels: LabelSpace, args):
    from transformers import DataCollatorWithPadding, Trainer

    # The heads honour `num_items_in_batch`: the Trainer's loss is the global mean over accumulated batches and
    # processes (tests/test_finetune_train.py compares accumulation with one large batch).
    return Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if (args.fp16 or args.bf16) else None),
        compute_metrics=build_compute_metrics(labels.problem_type, labels.num_labels),
    )


def train_and_evaluate(trainer, tokenized: dict, prepared: PreparedData, resume: str | None, guard=None):
    """Train (the best checkpoint is loaded at the end), evaluate it, predict the test split.

    Returns (metrics, decoded test predictions or None); (None, None) when `guard` saw a stop signal."""
    train_result = trainer.train(resume_from_checkpoint=resume)
    if guard is not None and guard.signum is not None:
        return None, None
    metrics = {**train_result.metrics, "train_samples": len(tokenized["train"])}
    if "validation" in tokenized:
        metrics.update(trainer.evaluate())
        metrics["eval_samples"] = len(tokenized["validation"])
        if trainer.state.best_model_checkpoint:
            metrics["best_checkpoint"] = os.path.basename(trainer.state.best_model_checkpoint)
    predictions = None
    if "test" in tokenized:
        output = trainer.predict(tokenized["test"], metric_key_prefix="test")
        predictions = decode_predictions(output.predictions, prepared.labels)
        if prepared.splits["test"].labels is not None:
            metrics.update({k: v for k, v in output.metrics.items() if not k.endswith(("_runtime", "_per_second"))})
        metrics["test_samples"] = len(tokenized["test"])
    return _clean(metrics), predictions


def model_card(
    trainer,
    prepared: PreparedData,
    model_args,
    data_args,
    training_args,
    hub_args,
    *,
    base: str,
    is_demo: bool,
    max_length: int,
    metrics: dict,
) -> Cards:
    """The cards of the classifier's folder and of its plain-BERT twin (with --export_bert)."""
    args, train = trainer.args, prepared.splits["train"]
    # The usage snippet's example: of the first training texts, the one closest to a typical sentence's length.
    example = min(range(min(50, len(train))), key=lambda i: abs(len(train.texts[i]) - 80))
    info = FinetuningCardInfo(
        hub_model_id=hub_args.hub_model_id,
        output_dir=training_args.output_dir,
        config=trainer.model.config,
        num_parameters=trainer.model.num_parameters(),
        base_model=base,
        base_model_id=model_args.model_name_or_path,
        problem_type=prepared.labels.problem_type,
        label_names=prepared.labels.names,
        data_description=(
            "the built-in demo task: sentences of Python's language reference, labelled with the part they come from"
            if is_demo
            else prepared.description
        ),
        dataset_id=data_args.dataset_name,
        dataset_config=data_args.dataset_config_name,
        metrics=metrics,
        hyperparameters={
            "learning_rate": f"{args.learning_rate:.3g}",
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "num_train_epochs": args.num_train_epochs,
            "max_train_steps": training_args.max_train_steps,
            "weight_decay": args.weight_decay,
            "warmup_ratio": training_args.warmup_ratio,
            "lr_scheduler_type": training_args.lr_scheduler_type,
            "max_seq_length": max_length,
            "seed": args.seed,
            "training examples": metrics["train_samples"],
            "steps": trainer.state.global_step,
        },
        example=train.texts[example][:300],
        example_pair=train.text_pairs[example] if train.text_pairs is not None else None,
        export_bert=hub_args.writes_twin(trainer.model.config),
    )
    return render_cards(info)


class RunGuard(TrainerCallback):
    """Pretraining's promises for the Trainer, as a callback: a checkpoint (or the export) is never written from
    weights holding NaN or inf, and SIGTERM / SIGINT stop the run at the next step with a checkpoint."""

    def __init__(self, stop: StopRequest):
        self.stop = stop
        self.signum: int | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.stop.requested and self.signum is None:
            self.signum = self.stop.signum
            control.should_save = True
            control.should_training_stop = True
        if control.should_save or control.should_evaluate or state.global_step >= state.max_steps:
            self.check(model, f"step {state.global_step}")
        return control

    @staticmethod
    def check(model, when: str) -> None:
        bad = non_finite_parameters(model)
        if bad:
            raise UserError(
                f"the weights hold NaN or inf at {when} ({', '.join(bad[:3])}): nothing was saved or exported, earlier "
                "checkpoints are intact; lower --learning_rate, or check the labels"
            )


def _close_progress_bars(trainer) -> None:
    for callback in trainer.callback_handler.callbacks:
        for name in ("prediction_bar", "training_bar"):
            bar = getattr(callback, name, None)
            if bar is not None:
                bar.close()
                setattr(callback, name, None)


def finetune(*, hub_api=None, **options) -> dict[str, float]:
    """Fine-tune, evaluate, predict, save (and upload); returns all metrics (train_*, eval_*, test_*).

    `options`: the flags by name (`finetune(train_file="t.csv", output_dir="o")`), typed and checked as the CLI's
    (`minibert.cli.argument_groups`). `hub_api`: an `HfApi`-like object for the upload (tests pass a recorder).
    While it runs, output_dir is locked against a second writer (`minibert.safety.OutputLock`). After SIGTERM /
    SIGINT the result is `{"status": "interrupted", "signal": N}`: a checkpoint was saved, nothing exported."""
    return run(*argument_groups(GROUPS, options, "finetune()"), hub_api=hub_api)


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: FinetuneArguments,
    hub_args: HubArguments | None = None,
    hub_api=None,
) -> dict[str, float]:
    """`finetune` on argument groups already parsed (the CLI's path)."""
    main_process = int(os.environ.get("RANK", "0")) == 0
    with OutputLock(training_args.output_dir, enabled=main_process):
        return _finetune(model_args, data_args, training_args, hub_args or HubArguments(), hub_api)


def _finetune(model_args, data_args, training_args, hub_args: HubArguments, hub_api) -> dict:
    state, resume, is_demo = _start(model_args, data_args, training_args)
    settings = run_settings(model_args, data_args, training_args, hub_args)
    saved = saved_settings(resume) if resume is not None else None
    if resume is not None:  # refused before the data is read, when the arguments already differ
        check_resume_settings(resume, saved, settings)
    if is_demo:
        data_args = use_demo_data(data_args, training_args.output_dir, state)
    prepared = prepare_data(data_args, training_args.seed, model_args.cache_dir)
    settings.update(data_settings(prepared))
    if resume is not None:
        check_resume_settings(resume, saved, settings)
    with state.main_process_first():  # a fresh model's tokenizer is trained on rank 0's data first (same data)
        model, tokenizer, base = load_model(
            model_args, prepared.labels, prepared.splits["train"].texts, training_args.seed
        )
    logger.info("model: %s (%s)", describe_size(model.config, model.num_parameters()), base)
    hub_args.check_twin(model.config)  # --export_bert true of a model with no BERT twin: refused now, not after
    if resume is not None:
        check_checkpoint_fits(model, resume)
    max_length, tokenized = _tokenize(prepared, tokenizer, model, data_args)
    trainer = _build_trainer(model, tokenizer, tokenized, prepared, training_args, is_demo)
    trainer.add_callback(RunSettings(settings))
    # Every input is checked by now: only from here on may the previous run's files go.
    if state.is_main_process:
        if resume is None:
            clear_previous_run(training_args.output_dir)
        mark_output_dir(training_args.output_dir, CLI_NAME)
    state.wait_for_everyone()
    outcome = _train(trainer, tokenized, prepared, resume, training_args.output_dir, state)
    if outcome[0] is None:
        return outcome[1]  # interrupted
    metrics, predictions = outcome
    if state.is_main_process:
        card = model_card(
            trainer,
            prepared,
            model_args,
            data_args,
            training_args,
            hub_args,
            base=base,
            is_demo=is_demo,
            max_length=max_length,
            metrics=metrics,
        )
        _write_outputs(trainer, tokenizer, prepared, training_args, hub_args, hub_api, card, metrics, predictions)
    state.wait_for_everyone()
    return metrics


def _start(model_args, data_args, training_args):
    """The process state, the checkpoint to resume, whether this is the demo; refuses an output_dir that is not
    ours or holds a run we were not told to continue or replace (nothing is cleared here)."""
    from accelerate import PartialState

    state = PartialState(cpu=needs_cpu_process_group())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != world_size:
        raise UserError(f"launched as {world_size} processes, but accelerate formed a group of {state.num_processes}")
    output_dir = training_args.output_dir
    resume = resolve_resume(training_args.resume_from_checkpoint, output_dir)
    is_demo = not data_args.has_data
    if state.is_main_process:
        check_output_dir_is_ours(output_dir, model_path=model_args.model_name_or_path)
        # The demo replaces its own earlier run, as pretraining's demo recipe does.
        check_previous_run(
            output_dir,
            CLI_NAME,
            previous_run(output_dir),
            resuming=resume is not None,
            overwrite=training_args.overwrite_output_dir or is_demo,
            resume_keyword="last",
        )
    state.wait_for_everyone()
    return state, resume, is_demo


def _tokenize(prepared, tokenizer, model, data_args) -> tuple[int, dict]:
    max_length = min(data_args.max_seq_length, model.config.max_position_embeddings)
    if max_length < data_args.max_seq_length:
        logger.warning(
            "--max_seq_length %d > the model's %d positions: using %d",
            data_args.max_seq_length,
            model.config.max_position_embeddings,
            max_length,
        )
    problem_type = prepared.labels.problem_type
    tokenized = {
        name: tokenize_examples(examples, tokenizer, max_length, problem_type)
        for name, examples in prepared.splits.items()
    }
    return max_length, tokenized


def _build_trainer(model, tokenizer, tokenized: dict, prepared, training_args, is_demo: bool):
    labels = prepared.labels
    try:
        args = build_training_arguments(
            training_args,
            has_eval="validation" in tokenized,
            best_metric=pick_best_metric(training_args.metric_for_best_model, labels.problem_type, labels.num_labels),
            learning_rate=training_args.learning_rate or default_learning_rate(model),
            epochs=training_args.num_train_epochs or (DEMO_EPOCHS if is_demo else 3.0),
        )
        return build_trainer(model, tokenizer, tokenized, labels, args)
    except UserError:
        raise
    except (ValueError, KeyError) as e:  # what transformers says of a setting it refuses
        raise UserError(f"transformers refused the training settings: {' '.join(str(e).split())[:300]}") from None


def _train(trainer, tokenized, prepared, resume, output_dir: str, state):
    """(metrics, predictions), or (None, the interrupted result) after a stop signal."""
    with StopRequest() as stop:
        guard = RunGuard(stop)
        trainer.add_callback(guard)
        try:
            metrics, predictions = train_and_evaluate(trainer, tokenized, prepared, resume, guard)
        except UserError:
            _close_progress_bars(trainer)  # the `error:` line then starts a line of its own
            raise
        except Exception as e:
            if not is_disk_full(e, output_dir):
                raise
            _close_progress_bars(trainer)
            removed = (
                remove_incomplete_checkpoints(os.path.join(output_dir, CHECKPOINTS_DIR))
                if state.is_main_process
                else []
            )
            raise UserError(
                f"no space left on the device to write in {output_dir}"
                + (f": the half-written {', '.join(removed)} was removed" if removed else "")
                + "; the earlier checkpoints are intact. Free space and rerun with --resume_from_checkpoint last"
            ) from None
    if guard.signum is not None:
        logger.warning(
            "stopped by signal %s at step %d; resume with --resume_from_checkpoint last",
            guard.signum,
            trainer.state.global_step,
        )
        return None, {"status": "interrupted", "signal": guard.signum, "train_steps": trainer.state.global_step}
    RunGuard.check(trainer.model, "the end of training")
    return metrics, predictions


def _write_outputs(
    trainer, tokenizer, prepared, training_args, hub_args, hub_api, card: Cards, metrics, predictions
) -> None:
    """The Hub-ready classifier + card, all_results.json, predictions; the upload if asked (main process)."""
    from minibert.hub import push_to_hub, remove_bert_twin, save_bert_twin, save_model_folder

    output_dir = training_args.output_dir
    save_model_folder(trainer.model, tokenizer, output_dir, model_card=card.model)
    if hub_args.writes_twin(trainer.model.config):
        save_bert_twin(trainer.model, tokenizer, output_dir, model_card=card.twin)
    else:
        remove_bert_twin(output_dir)
    write_json(os.path.join(output_dir, RESULTS_FILE), metrics)
    if predictions is not None:
        write_predictions(os.path.join(output_dir, PREDICTIONS_FILE), prepared.splits["test"], predictions)
    logger.info("results: %s", json.dumps({k: v for k, v in metrics.items() if k.startswith(("eval_", "test_"))}))
    logger.info("checkpoint written to %s", os.path.abspath(output_dir))
    if predictions is not None:
        show_examples(prepared.splits["test"], predictions, prepared.labels, training_args.num_examples_shown)
    if hub_args.push_to_hub:
        url = push_to_hub(
            output_dir,
            hub_args.hub_model_id,
            hub_args.hub_token,
            hub_args.hub_private_repo,
            api=hub_api,
            commit_message="Upload fine-tuned MiniBERT",
        )
        logger.info("uploaded to %s", url)


def cli_main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse flags (or a YAML/JSON file) and run them."""
    groups = parse_args(GROUPS, argv, prog="minibert-finetune")
    setup_process()
    return run(*groups)


def setup_process() -> None:
    """The CLIs' logging (to stdout) and CPU threads. The main process is known from the launcher's environment, not
    `PartialState()`: the state must first be made by the run, which knows whether the processes need a CPU group."""
    setup_logging(int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) == 0, stream=sys.stdout)
    set_cpu_threads()
