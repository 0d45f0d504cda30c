"""`minibert-evaluate glue`: fine-tune a checkpoint on every GLUE task and report one table.

    minibert-evaluate glue --model_name_or_path M --output_dir O [--data_dir glue_data] [--tasks cola,sst2,...]
                           [--seeds 3] [--protocol direct|mnli-init] [--hyperparameters my.yaml]

Each (task, seed) is one `finetune.train.finetune` call, the code behind `minibert-finetune` (so 1..N GPUs through
accelerate, as it runs: `accelerate launch -m finetune.glue glue ...`), trained for the epochs of
finetune/configs/glue.yaml and scored on the task's dev set after the last epoch. The metrics are GLUE's, computed
by scikit-learn and scipy from the predictions the run wrote; the average is the leaderboard's (below).

    O/
      eval_results.json    {"tasks": {task: {metric: mean, metric_std: std}}, "glue_score", "protocol", "seeds", ...}
      glue_scores.png      a bar per task (mean, std over seeds), the average as a line
      README.md            the checkpoint's model card, the scores added as model-index results
      results/             one JSON per finished (task, seed): what a rerun skips
      runs/<task>/seed-N/  each fine-tuned model, its predictions on the dev set (predict_results.jsonl)
      data/<task>/         the task as read (train, and the dev set(s) as `test`), saved with `datasets`

The data: GLUE's own files (`--data_dir`, the layout of GLUE's download_glue_data.py: `<dir>/CoLA/train.tsv`,
`dev.tsv`, ...; MNLI's `dev_matched.tsv` and `dev_mismatched.tsv`), or the Hub's `nyu-mll/glue` through `datasets`.
WNLI is listed and skipped, as BERT and its successors do (its train and dev sets contradict each other).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from transformers import HfArgumentParser

from minibert.cli import UserError, argument_groups, check_positive, load_config_file, parse_args, run_cli, typed_values
from minibert.runs import CHECKPOINTS_DIR, DEFAULT_PRETRAINED_DIR, needs_cpu_process_group
from minibert.safety import OutputLock, check_output_dir, read_json_dict, write_json

from . import train as finetune_train
from .args import GROUPS, DataArguments, FinetuneArguments, ModelArguments
from .checkpointing import last_complete_checkpoint
from .metrics import REGRESSION, SINGLE_LABEL, accuracy, matthews_correlation, pearson, spearmanr

logger = logging.getLogger("finetune.glue")

HUB_DATASET = "nyu-mll/glue"
RESULTS_FILE = "eval_results.json"
CHART_FILE = "glue_scores.png"
CARD_FILE = "README.md"
RESULTS_DIR, RUNS_DIR, DATA_DIR = "results", "runs", "data"
DATA_INFO = "glue_task.json"  # beside a prepared task's dataset: where it came from, the dev sets' sizes
PROTOCOLS = ("direct", "mnli-init")
MNLI_INIT_TASKS = ("rte", "mrpc", "stsb")  # started from the MNLI model under --protocol mnli-init


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its text and label are in GLUE's files and on the Hub, its classes, its metrics."""

    name: str  # the Hub's config name, and ours
    title: str  # as papers print it
    folder: str  # its folder in GLUE's layout
    columns: tuple[str, ...]  # (text, text pair or nothing) as GLUE's TSV header names them
    label: str | None  # the label's header name (CoLA's files have no header)
    classes: tuple[str, ...]  # class names in the Hub's order (label 0, 1, ...); () for regression
    metrics: tuple[str, ...]  # transformers' names
    hub_columns: tuple[str, ...]
    dev_files: tuple[str, ...] = ("dev.tsv",)
    hub_dev_splits: tuple[str, ...] = ("validation",)
    results: tuple[str, ...] = ()  # the names its dev sets are reported under (default: the task's name)

    @property
    def result_names(self) -> tuple[str, ...]:
        return self.results or (self.name,)

    @property
    def regression(self) -> bool:
        return not self.classes


TASKS = {
    t.name: t
    for t in (
        # CoLA's TSVs have no header: source, label, the original annotation, sentence.
        GlueTask("cola", "CoLA", "CoLA", ("sentence",), None, ("unacceptable", "acceptable"),
                 ("matthews_correlation",), ("sentence",)),
        GlueTask("sst2", "SST-2", "SST-2", ("sentence",), "label", ("negative", "positive"), ("accuracy",),
                 ("sentence",)),
        GlueTask("mrpc", "MRPC", "MRPC", ("#1 String", "#2 String"), "Quality", ("not_equivalent", "equivalent"),
                 ("f1", "accuracy"), ("sentence1", "sentence2")),
        GlueTask("qqp", "QQP", "QQP", ("question1", "question2"), "is_duplicate", ("not_duplicate", "duplicate"),
                 ("f1", "accuracy"), ("question1", "question2")),
        GlueTask("stsb", "STS-B", "STS-B", ("sentence1", "sentence2"), "score", (), ("pearson", "spearmanr"),
                 ("sentence1", "sentence2")),
        GlueTask("mnli", "MNLI", "MNLI", ("sentence1", "sentence2"), "gold_label",
                 ("entailment", "neutral", "contradiction"), ("accuracy",), ("premise", "hypothesis"),
                 dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
                 hub_dev_splits=("validation_matched", "validation_mismatched"), results=("mnli", "mnli-mm")),
        GlueTask("qnli", "QNLI", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                 ("accuracy",), ("question", "sentence")),
        GlueTask("rte", "RTE", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
                 ("accuracy",), ("sentence1", "sentence2")),
    )
}  # fmt: skip
SKIPPED = {"wnli": "WNLI"}  # listed, never run: its train and dev sets are adversarial to each other
COLA_FIELDS = 4  # source, label, original label, sentence
RESULT_TITLES = {
    "mnli": "MNLI-m",
    "mnli-mm": "MNLI-mm",
    **{t.name: t.title for t in TASKS.values() if t.name != "mnli"},
}
METRIC_TITLES = {
    "matthews_correlation": "Matthews corr.",
    "accuracy": "accuracy",
    "f1": "F1",
    "pearson": "Pearson",
    "spearmanr": "Spearman",
}
HUB_METRIC_IDS = {"pearson": "pearsonr"}  # the Hub's metric id where it differs from transformers' name


# ---------------------------------------------------------------------------------------------------------------
# Arguments


@dataclass
class GlueArguments:
    model_name_or_path: str = field(
        default=DEFAULT_PRETRAINED_DIR,
        metadata={
            "help": "The checkpoint to evaluate: minibert, a transformers BERT (converted on the fly), or a model "
            "folder's bert/ twin; a folder or a Hub id. It is only read."
        },
    )
    output_dir: str = field(default="outputs/glue", metadata={"help": "Where the runs, the table and the card go."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "GLUE's files in the layout of its download script (CoLA/train.tsv, dev.tsv, ...). Default: "
            f"the Hub's {HUB_DATASET} through `datasets`."
        },
    )
    tasks: str = field(
        default="all",
        metadata={"help": f"Comma-separated: {', '.join(TASKS)} (wnli is listed and skipped), or all."},
    )
    seeds: int = field(default=3, metadata={"help": "Fine-tuning runs per task (seeds --seed, --seed + 1, ...)."})
    seed: int = field(default=42, metadata={"help": "The first seed."})
    protocol: str = field(
        default="direct",
        metadata={
            "help": "direct: every task from the checkpoint. mnli-init: RTE, MRPC and STS-B start from the model "
            "fine-tuned on MNLI (same seed), as MosaicBERT and ModernBERT report them."
        },
    )
    hyperparameters: str | None = field(
        default=None,
        metadata={
            "help": "A YAML file laid over finetune/configs/glue.yaml (`defaults:` and `tasks: {cola: {...}}`, with "
            "minibert-finetune's flag names)."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows of each task only (a quick check)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Score on the first N rows of each dev set only (a quick check)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Redo runs whose recorded settings differ from this command's (otherwise refused)."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "The checkpoint's Hub id, for the card's title and model-index."}
    )

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        check_positive(self, "seeds")
        if not 0 <= self.seed < 2**32 - self.seeds:
            raise UserError(f"--seed must be in [0, 2**32 - seeds), not {self.seed}")
        check_positive(self, "max_train_samples", "max_eval_samples")
        self.task_list()

    def task_list(self) -> list[str]:
        """The tasks to run, in GLUE's order; an unknown name is an error, WNLI is dropped with a note."""
        if self.tasks.strip().lower() == "all":
            return list(TASKS)
        wanted = []
        for raw in self.tasks.split(","):
            name = raw.strip().lower().replace("-", "")
            if not name:
                continue
            if name in SKIPPED:
                logger.warning("%s is listed and skipped, as GLUE results usually are", SKIPPED[name])
                continue
            if name not in TASKS:
                raise UserError(f"--tasks: unknown GLUE task {raw.strip()!r}; choose from {', '.join(TASKS)} (or all)")
            wanted.append(name)
        if not wanted:
            raise UserError("--tasks names no task to run")
        return [t for t in TASKS if t in wanted]

    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]


# Keys a hyper-parameter file may set: fine-tuning's own flags, minus what the suite decides per run.
_SUITE_DECIDES = {
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "seed",
    "num_examples_shown",
    "metric_for_best_model",  # no checkpoint is picked by its dev score
}
DATA_KEYS = ("max_seq_length",)
MODEL_KEYS = ("classifier_dropout",)


def hyperparameter_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(FinetuneArguments)} - _SUITE_DECIDES | set(DATA_KEYS) | set(MODEL_KEYS)


def shipped_hyperparameters() -> str:
    return str(resources.files("finetune").joinpath("configs", "glue.yaml"))


def _read_layer(path: str, parser: HfArgumentParser, keys: set[str]) -> tuple[dict, dict]:
    """(defaults, {task: settings}) of one hyper-parameter file, each value typed as its `minibert-finetune` flag
    would give it (YAML reads `2e-5` as a string). Unknown keys or tasks are errors naming the file."""
    data = load_config_file(path, "--hyperparameters")
    defaults, per_task = data.get("defaults") or {}, data.get("tasks") or {}
    if not set(data) <= {"defaults", "tasks"}:
        raise UserError(f"--hyperparameters {path}: expected `defaults:` and/or `tasks:` at the top level")
    if not isinstance(defaults, dict) or not isinstance(per_task, dict):
        raise UserError(f"--hyperparameters {path}: `defaults` and `tasks` must be mappings")
    unknown_tasks = sorted(set(per_task) - set(TASKS))
    if unknown_tasks:
        raise UserError(f"--hyperparameters {path}: unknown task {unknown_tasks[0]!r}; tasks: {', '.join(TASKS)}")
    typed = {}
    for where, values in (("defaults", defaults), *((f"tasks.{t}", per_task.get(t) or {}) for t in TASKS)):
        if not isinstance(values, dict):
            raise UserError(f"--hyperparameters {path}: {where} must be a mapping")
        unknown = sorted(set(values) - keys)
        if unknown:
            raise UserError(
                f"--hyperparameters {path}: {where} sets {unknown[0]!r}, not a fine-tuning setting the suite "
                f"leaves to you ({', '.join(sorted(keys))})"
            )
        typed[where] = typed_values(parser, values, f"--hyperparameters {path}: {where}")
    return typed.pop("defaults"), {t: typed[f"tasks.{t}"] for t in TASKS}


def load_hyperparameters(user_file: str | None) -> dict[str, dict]:
    """Per task, the fine-tuning settings: the shipped file's defaults < its task entry < the user's defaults <
    the user's task entry."""
    keys = hyperparameter_keys()
    parser = HfArgumentParser((ModelArguments, DataArguments, FinetuneArguments))
    merged = {task: {} for task in TASKS}
    for path in [shipped_hyperparameters(), *([user_file] if user_file else [])]:
        defaults, per_task = _read_layer(path, parser, keys)
        for task in TASKS:
            merged[task].update(defaults)
            merged[task].update(per_task[task])
    return merged


# ---------------------------------------------------------------------------------------------------------------
# Data: GLUE's files or the Hub -> a `datasets` folder (train, and the dev sets as `test`)


@dataclass
class TaskData:
    texts: list[str]
    pairs: list[str] | None
    labels: list  # class ids (the Hub's order) or floats

    def head(self, n: int | None) -> TaskData:
        if n is None:
            return self
        return TaskData(self.texts[:n], self.pairs[:n] if self.pairs is not None else None, self.labels[:n])


def _missing(what: str, data_dir: str, task: GlueTask) -> UserError:
    return UserError(
        f"--data_dir {data_dir}: no {what} for {task.title} (GLUE's layout: {data_dir}/{task.folder}/train.tsv, "
        f"{', '.join(task.dev_files)}); leave {task.name} out of --tasks, or leave out --data_dir to read "
        f"{HUB_DATASET} from the Hub"
    )


def read_glue_file(path: str, task: GlueTask) -> TaskData:
    """One TSV of GLUE's layout. Fields are unquoted (sentences hold unbalanced quotes), as GLUE's own readers and
    transformers' glue processors read them. Rows too short for the needed fields, or with a label outside the
    task's classes, are skipped with a warning (QQP's train.tsv has a few); a header without the task's columns
    is an error."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    if task.label is None:  # CoLA: no header
        if not rows or len(rows[0]) != COLA_FIELDS or rows[0][1].strip() not in ("0", "1"):
            raise UserError(
                f"{path}: not GLUE's {task.title} layout (no header; {COLA_FIELDS} tab-separated fields: source, "
                f"label 0/1, original label, sentence); its first line has {len(rows[0]) if rows else 0} fields"
            )
        text_at, label_at, body = [3], 1, rows
    else:
        header = [h.strip() for h in rows[0]] if rows else []
        needed = [*task.columns, task.label]
        absent = [c for c in needed if c not in header]
        if absent:
            raise UserError(
                f"{path}: not GLUE's {task.title} layout: its header needs the columns {', '.join(needed)}; "
                f"{', '.join(absent)} missing (found: {', '.join(header[:10]) or 'nothing'})"
            )
        text_at = [header.index(c) for c in task.columns]
        # The label is the last field of every GLUE file that has one at the end (STS-B's, MNLI's rows may hold
        # extra tab-separated fields in between, as transformers' StsbProcessor also assumes).
        label_at = -1 if header[-1] == task.label else header.index(task.label)
        body = rows[1:]
    texts, pairs, labels, skipped = [], [], [], 0
    for row in body:
        if len(row) <= max(text_at) or (label_at >= 0 and len(row) <= label_at):
            skipped += 1
            continue
        label = _label(row[label_at].strip(), task)
        if label is None:
            skipped += 1
            continue
        texts.append(row[text_at[0]])
        if len(text_at) > 1:
            pairs.append(row[text_at[1]])
        labels.append(label)
    if skipped:
        logger.warning("%s: skipped %d of %d rows (too few fields, or no known label)", path, skipped, len(body))
    if not labels:
        raise UserError(f"{path}: no row of GLUE's {task.title} layout with a known label")
    return TaskData(texts, pairs if len(task.columns) > 1 else None, labels)


def _label(value: str, task: GlueTask):
    """A label cell as a class id (the Hub's order) or a float (STS-B); None when it is not one."""
    if task.regression:
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    if value in task.classes:
        return task.classes.index(value)
    if value.isdigit() and int(value) < len(task.classes):
        return int(value)
    return None


def read_glue_folder(data_dir: str, task: GlueTask) -> tuple[TaskData, list[TaskData]]:
    """(train, [dev, ...]) of a task from GLUE's layout."""
    if not os.path.isdir(data_dir):
        raise UserError(f"--data_dir {data_dir}: no such folder")
    folder = os.path.join(data_dir, task.folder)
    if not os.path.isdir(folder):
        raise _missing(f"{task.folder}/ folder", data_dir, task)
    files = ["train.tsv", *task.dev_files]
    for name in files:
        if not os.path.isfile(os.path.join(folder, name)):
            raise _missing(f"{task.folder}/{name}", data_dir, task)
    train, *devs = (read_glue_file(os.path.join(folder, name), task) for name in files)
    return train, devs


def load_glue_hub(task: GlueTask, cache_dir: str | None) -> tuple[TaskData, list[TaskData]]:
    """(train, [dev, ...]) of a task from the Hub's `nyu-mll/glue` (needs the network, or a filled cache)."""
    import datasets

    try:
        loaded = datasets.load_dataset(HUB_DATASET, task.name, cache_dir=cache_dir)
    except Exception as e:  # datasets' errors (network, missing config) have no common base worth naming
        raise UserError(
            f"cannot load {HUB_DATASET} ({task.name}) from the Hub: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
            "; with GLUE's files on disk, pass --data_dir"
        ) from None

    def convert(split) -> TaskData:
        columns = [split[c] for c in task.hub_columns]
        labels = split["label"]
        if not task.regression:
            names = split.features["label"].names
            if tuple(names) != task.classes:
                raise UserError(f"{HUB_DATASET} ({task.name}) names its classes {names}, expected {task.classes}")
            labels = [int(v) for v in labels]
        return TaskData(list(columns[0]), list(columns[1]) if len(columns) > 1 else None, list(labels))

    return convert(loaded["train"]), [convert(loaded[name]) for name in task.hub_dev_splits]


def prepare_task_data(task: GlueTask, args: GlueArguments, folder: str) -> dict:
    """Read a task and save it with `datasets` in `folder` (train; its dev sets, concatenated, as `test`).

    Returns the folder's info ({"source", "dev_sizes": {result name: rows}}); an existing folder made from the same
    source and limits is reused."""
    import datasets

    source = {
        "data": os.path.abspath(args.data_dir) if args.data_dir else HUB_DATASET,
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
    }
    info_path = os.path.join(folder, DATA_INFO)
    info = read_json_dict(info_path)
    if info is not None and info.get("source") == source:
        return info
    if args.data_dir:
        train, devs = read_glue_folder(args.data_dir, task)
    else:
        train, devs = load_glue_hub(task, args.cache_dir)
    train = train.head(args.max_train_samples)
    devs = [d.head(args.max_eval_samples) for d in devs]
    label_feature = datasets.Value("float64") if task.regression else datasets.ClassLabel(names=list(task.classes))
    features = {"text": datasets.Value("string")}
    if train.pairs is not None:
        features["text_pair"] = datasets.Value("string")
    features["label"] = label_feature

    def to_dataset(parts: list[TaskData]):
        columns = {"text": [t for p in parts for t in p.texts]}
        if train.pairs is not None:
            columns["text_pair"] = [t for p in parts for t in p.pairs]
        columns["label"] = [v for p in parts for v in p.labels]
        return datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    dataset = datasets.DatasetDict({"train": to_dataset([train]), "test": to_dataset(devs)})
    info = {
        "task": task.name,
        "source": source,
        "dev_sizes": {name: len(d.labels) for name, d in zip(task.result_names, devs)},
        "train_rows": len(train.labels),
    }
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{task.name}-")
    try:
        dataset.save_to_disk(staging)
        write_json(os.path.join(staging, DATA_INFO), info)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "%s: %d training rows, dev %s (from %s)",
        task.title,
        info["train_rows"],
        ", ".join(f"{RESULT_TITLES[k]} {v}" for k, v in info["dev_sizes"].items()),
        source["data"],
    )
    return info


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def binary_f1(predictions, references) -> float:
    """F1 of the positive class (label 1: MRPC's `equivalent`, QQP's `duplicate`), as GLUE scores them."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(references), np.asarray(predictions), pos_label=1, zero_division=0))


def task_metrics(task: GlueTask, predictions, references) -> dict[str, float]:
    """GLUE's metrics of one dev set, by scikit-learn / scipy (through `finetune.metrics`)."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    compute = {
        "accuracy": accuracy,
        "f1": binary_f1,
        "matthews_correlation": matthews_correlation,
        "pearson": pearson,
        "spearmanr": spearmanr,
    }
    return {name: compute[name](predictions, references) for name in task.metrics}


def metric_keys(metrics: dict[str, float]) -> list[str]:
    """The metrics of a result, without the `<metric>_std` entries a summary adds."""
    return [k for k in metrics if not k.endswith("_std")]


def task_score(metrics: dict[str, float]) -> float:
    """A task's one number on the leaderboard: the unweighted mean of its metrics (MRPC F1 and accuracy, ...)."""
    return float(np.mean([metrics[k] for k in metric_keys(metrics)]))


def glue_average(results: dict[str, dict[str, float]]) -> float:
    """The leaderboard's macro-average: each task's score (its metrics averaged), MNLI's being the mean of matched
    and mismatched, then the mean over the tasks. (This reproduces BERT-large's 80.5 from its published test
    figures with WNLI's 65.1 included; here WNLI is skipped, so the mean is over the eight other tasks.)"""
    scores = {}
    for name, metrics in results.items():
        task = "mnli" if name in ("mnli", "mnli-mm") else name
        scores.setdefault(task, []).append(task_score(metrics))
    return float(np.mean([np.mean(v) for v in scores.values()]))


def read_predictions(path: str, task: GlueTask) -> list:
    """The predicted class id (the Hub's order) or score of each dev row, from `finetune`'s predict_results.jsonl."""
    predictions = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            predictions.append(float(row["score"]) if task.regression else task.classes.index(row["label"]))
    return predictions


def score_run(task: GlueTask, run_dir: str, data_folder: str, dev_sizes: dict[str, int]) -> dict[str, dict]:
    """{result name: metrics} of a finished run, from its predictions and the dev labels."""
    import datasets

    predictions = read_predictions(os.path.join(run_dir, finetune_train.PREDICTIONS_FILE), task)
    references = datasets.load_from_disk(data_folder)["test"]["label"]
    if len(predictions) != len(references):
        raise UserError(f"{run_dir}: {len(predictions)} predictions for {len(references)} dev rows; rerun this task")
    scored, start = {}, 0
    for name, size in dev_sizes.items():  # MNLI: matched, then mismatched
        scored[name] = task_metrics(task, predictions[start : start + size], references[start : start + size])
        start += size
    return scored


# ---------------------------------------------------------------------------------------------------------------
# The suite


def _model_id(path: str) -> str:
    return os.path.abspath(path) if os.path.exists(path) else path


OUR_NAMES = {RESULTS_FILE, CHART_FILE, CARD_FILE, RESULTS_DIR, RUNS_DIR, DATA_DIR}
CLI_NAME = "GLUE evaluation"  # as `minibert.safety.check_output_dir` names it


def check_suite_output_dir(args: GlueArguments) -> None:
    """O is ours by `minibert.safety.check_output_dir`'s policy (new, empty, or holding only what an evaluation
    writes), and neither the checkpoint nor inside it (the evaluated checkpoint is never modified)."""
    out, model = os.path.abspath(args.output_dir), _model_id(args.model_name_or_path)
    if os.path.isabs(model) and (out == model or out.startswith(model.rstrip(os.sep) + os.sep)):
        raise UserError(
            f"--output_dir {args.output_dir} is, or lies inside, the checkpoint being evaluated, which is never "
            "modified; choose another folder"
        )
    check_output_dir(args.output_dir, CLI_NAME, OUR_NAMES, evidence=OUR_NAMES)


def _record_path(out: str, task: str, seed: int) -> str:
    """A finished (task, seed)'s record: what a rerun skips."""
    return os.path.join(out, RESULTS_DIR, f"{task}-seed{seed}.json")


def _run_dir(out: str, task: str, seed: int) -> str:
    return os.path.join(out, RUNS_DIR, task, f"seed-{seed}")


def run_settings(args: GlueArguments, task: str, seed: int, hyperparameters: dict) -> dict:
    """What a finished (task, seed) must match to be reused by a rerun."""
    return {
        "model": _model_id(args.model_name_or_path),
        "init": "mnli" if args.protocol == "mnli-init" and task in MNLI_INIT_TASKS else "checkpoint",
        "data": os.path.abspath(args.data_dir) if args.data_dir else HUB_DATASET,
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "hyperparameters": hyperparameters,
        "seed": seed,
    }


def run_order(tasks: list[str], protocol: str) -> list[str]:
    """GLUE's order; under mnli-init MNLI first, and the tasks started from it after it."""
    if protocol != "mnli-init":
        return tasks
    first = [t for t in tasks if t == "mnli"]
    late = [t for t in tasks if t in MNLI_INIT_TASKS]
    return first + [t for t in tasks if t != "mnli" and t not in MNLI_INIT_TASKS] + late


def _finetune_options(task: GlueTask, init: str, from_mnli: bool, data_folder: str, run_dir: str, seed: int, hp: dict):
    """`finetune.train.finetune`'s keyword options (its flags) for one (task, seed): the suite's, then `hp`."""
    return dict(
        model_name_or_path=init,
        ignore_mismatched_sizes=from_mnli,
        dataset_name=data_folder,
        validation_split_name="no-validation",  # scored once, after training, on the dev set (the `test` split)
        validation_split_percentage=0,
        text_column="text",
        text_pair_column="text_pair" if len(task.columns) > 1 else None,
        problem_type=REGRESSION if task.regression else SINGLE_LABEL,
        output_dir=run_dir,
        seed=seed,
        overwrite_output_dir=True,
        num_examples_shown=0,
        **hp,
    )


def evaluate_glue(args: GlueArguments) -> dict:
    """Run every unfinished (task, seed), then write the table, eval_results.json, the chart and the card.

    Returns eval_results.json's content, or {"status": "interrupted", "signal": N} after SIGTERM / SIGINT (the
    finished runs are kept; a rerun continues with the next unfinished one)."""
    from accelerate import PartialState

    tasks = args.task_list()
    seeds = args.seed_list()
    hyperparameters = load_hyperparameters(args.hyperparameters)
    for task in tasks:  # every setting checked before the first run
        options = _finetune_options(TASKS[task], "x", False, "x", "x", seeds[0], hyperparameters[task])
        argument_groups(GROUPS, options, "--hyperparameters")
    state = PartialState(cpu=needs_cpu_process_group())
    out = args.output_dir
    if state.is_main_process:
        check_suite_output_dir(args)
    order = run_order(tasks, args.protocol)
    needs_mnli = args.protocol == "mnli-init" and any(t in MNLI_INIT_TASKS for t in tasks) and "mnli" not in tasks
    with OutputLock(out, enabled=state.is_main_process):
        records = {}
        for task in order:
            for seed in seeds:
                settings = run_settings(args, task, seed, hyperparameters[task])
                record = read_json_dict(_record_path(out, task, seed))
                if record is not None and record.get("settings") != settings and not args.overwrite_output_dir:
                    raise UserError(
                        f"--output_dir {out} holds a {task} run (seed {seed}) made with other settings (model, data, "
                        "protocol or hyper-parameters); pass --overwrite_output_dir to redo it, or choose another folder"
                    )
                if record is not None and record.get("settings") == settings:
                    records[(task, seed)] = record
        if needs_mnli:
            missing = [s for s in seeds if not os.path.isfile(os.path.join(_run_dir(out, "mnli", s), "config.json"))]
            if missing:
                raise UserError(
                    "--protocol mnli-init starts RTE, MRPC and STS-B from the MNLI model: add mnli to --tasks "
                    f"(no MNLI run of seed {missing[0]} in {out})"
                )
        todo = [(t, s) for t in order for s in seeds if (t, s) not in records]
        if records:
            logger.info("%d of %d runs already finished in %s: not redone", len(records), len(order) * len(seeds), out)
        data_info = {}
        for task, seed in todo:
            glue_task = TASKS[task]
            data_folder = os.path.join(out, DATA_DIR, task)
            if task not in data_info:
                with state.main_process_first():
                    data_info[task] = prepare_task_data(glue_task, args, data_folder)
            run_dir = _run_dir(out, task, seed)
            from_mnli = args.protocol == "mnli-init" and task in MNLI_INIT_TASKS
            init = _run_dir(out, "mnli", seed) if from_mnli else args.model_name_or_path
            settings = run_settings(args, task, seed, hyperparameters[task])
            options = _finetune_options(glue_task, init, from_mnli, data_folder, run_dir, seed, hyperparameters[task])
            # A run killed part-way resumes from its last Trainer checkpoint when its settings are unchanged.
            started_file = os.path.join(out, RUNS_DIR, task, f".seed-{seed}-started.json")
            started = read_json_dict(started_file)
            if started == settings and last_complete_checkpoint(os.path.join(run_dir, CHECKPOINTS_DIR)):
                options["resume_from_checkpoint"] = "last"
            if state.is_main_process:
                write_json(started_file, settings)
            state.wait_for_everyone()
            logger.info(
                "GLUE %s, seed %d (%d of %d): fine-tuning %s",
                glue_task.title,
                seed,
                todo.index((task, seed)) + 1,
                len(todo),
                "the MNLI model" if from_mnli else args.model_name_or_path,
            )
            result = finetune_train.finetune(**options)
            if result.get("status") == "interrupted":
                return result
            record = None
            if state.is_main_process:
                record = {
                    "task": task,
                    "seed": seed,
                    "settings": settings,
                    "results": score_run(glue_task, run_dir, data_folder, data_info[task]["dev_sizes"]),
                    "train_steps": result.get("train_steps") or result.get("train_global_step"),
                    "train_runtime": result.get("train_runtime"),
                }
                # The Trainer's per-epoch checkpoints are only for resuming this run; the model stays.
                shutil.rmtree(os.path.join(run_dir, CHECKPOINTS_DIR), ignore_errors=True)
                write_json(_record_path(out, task, seed), record)
                logger.info(
                    "GLUE %s, seed %d: %s",
                    glue_task.title,
                    seed,
                    "; ".join(
                        f"{RESULT_TITLES[n]} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                        for n, m in record["results"].items()
                    ),
                )
            state.wait_for_everyone()
            records[(task, seed)] = record or read_json_dict(_record_path(out, task, seed))
        summary = summarize(records, tasks, seeds, args)
        if state.is_main_process:
            write_outputs(summary, args)
        state.wait_for_everyone()
    return summary


def summarize(records: dict, tasks: list[str], seeds: list[int], args: GlueArguments) -> dict:
    """eval_results.json: per result, each metric's mean and standard deviation over the seeds (sample standard
    deviation; 0 for one seed), the leaderboard average, the protocol and seeds."""
    per_seed: dict[str, dict[int, dict]] = {}
    for task in tasks:
        for seed in seeds:
            for name, metrics in records[(task, seed)]["results"].items():
                per_seed.setdefault(name, {})[seed] = metrics
    results = {}
    for name, by_seed in per_seed.items():
        entry = {}
        for metric in next(iter(by_seed.values())):
            values = [by_seed[s][metric] for s in seeds]
            entry[metric] = float(np.mean(values))
            entry[f"{metric}_std"] = float(statistics.stdev(values)) if len(values) > 1 else 0.0
        results[name] = entry
    complete = set(tasks) == set(TASKS)
    return {
        "tasks": results,
        "glue_score": glue_average(results) if complete else None,
        "average": glue_average(results),  # the same average over the tasks run (all: the GLUE score)
        "protocol": args.protocol,
        "seeds": seeds,
        "model": args.hub_model_id or args.model_name_or_path,
        "data": args.data_dir or HUB_DATASET,
        "split": "validation",
        "skipped": sorted(SKIPPED),
        "per_seed": {name: {str(s): m for s, m in by_seed.items()} for name, by_seed in per_seed.items()},
    }


# ---------------------------------------------------------------------------------------------------------------
# Outputs: table, JSON, chart, card


def format_table(summary: dict) -> str:
    """The terminal table: a row per result (metrics x 100, mean ± std over the seeds), then the average."""
    seeds = summary["seeds"]
    lines = [
        f"GLUE dev sets, {summary['model']}: protocol {summary['protocol']}, "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}); x100, mean ± std",
        f"  {'task':<9} {'metric':<22} score",
    ]
    for name, metrics in summary["tasks"].items():
        shown, values = _shown(metrics)
        lines.append(f"  {RESULT_TITLES[name]:<9} {shown:<22} {values}")
    if summary["glue_score"] is not None:
        lines.append(f"  GLUE score (leaderboard average of 8 tasks, WNLI skipped): {100 * summary['glue_score']:.1f}")
    else:
        lines.append(
            f"  average of the {len({n.replace('-mm', '') for n in summary['tasks']})} tasks run: "
            f"{100 * summary['average']:.1f} (not a GLUE score: that needs all 8)"
        )
    return "\n".join(lines)


def _shown(metrics: dict[str, float]) -> tuple[str, str]:
    """A result's metric names and scores as the table and the card show them: x100, mean ± std."""
    keys = metric_keys(metrics)
    return (
        " / ".join(METRIC_TITLES[k] for k in keys),
        " / ".join(f"{100 * metrics[k]:.1f} ± {100 * metrics[k + '_std']:.1f}" for k in keys),
    )


def write_chart(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["tasks"])
    scores, errors = [], []
    for name in names:
        metrics = summary["tasks"][name]
        scores.append(100 * task_score(metrics))
        errors.append(100 * float(np.mean([metrics[k + "_std"] for k in metric_keys(metrics)])))
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 4))
    ax.bar([RESULT_TITLES[n] for n in names], scores, yerr=errors, capsize=4, color="#4c72b0")
    average = summary["glue_score"] if summary["glue_score"] is not None else summary["average"]
    ax.axhline(100 * average, color="#c44e52", linestyle="--", label=f"average {100 * average:.1f}")
    ax.set_ylabel("dev score x100 (task's metrics averaged)")
    ax.set_title(f"GLUE: {summary['model']} ({summary['protocol']}, {len(summary['seeds'])} seeds)")
    ax.legend(loc="lower right")
    ax.set_ylim(min(0, min(scores) - 5), 100)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def eval_results_for_card(summary: dict) -> list:
    """The scores as huggingface_hub `EvalResult`s (the Hub's model-index): one per dev set and metric."""
    from huggingface_hub import EvalResult

    results = []
    for name, metrics in summary["tasks"].items():
        task = TASKS["mnli" if name == "mnli-mm" else name]
        split = {"mnli": "validation_matched", "mnli-mm": "validation_mismatched"}.get(name, "validation")
        for metric in metric_keys(metrics):
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name=f"GLUE {RESULT_TITLES[name]}",
                    dataset_type=HUB_DATASET,
                    dataset_name=f"GLUE {RESULT_TITLES[name]}",
                    dataset_config=task.name,
                    dataset_split=split,
                    metric_type=HUB_METRIC_IDS.get(metric, metric),
                    metric_name=f"{METRIC_TITLES[metric]} (mean of {len(summary['seeds'])} seeds)",
                    metric_value=round(metrics[metric], 4),
                )
            )
    return results


def model_card(summary: dict, args: GlueArguments) -> str:
    """The checkpoint's own card (read, never written) with the GLUE scores added to its metadata as model-index
    results and as a section; a checkpoint without a card gets a short one."""
    from huggingface_hub import ModelCard, ModelCardData

    from minibert.card import is_hub_id, shown_path

    model = args.model_name_or_path
    card = None
    local = os.path.join(model, CARD_FILE)
    try:
        if os.path.isfile(local):
            card = ModelCard.load(local)
        elif is_hub_id(model):
            card = ModelCard.load(model)
    except Exception as e:  # no card on the Hub, no network: the scores still get a card
        logger.warning("could not read the model card of %s (%s): writing a new one", model, type(e).__name__)
    shown = model if is_hub_id(model) else shown_path(model)
    title = args.hub_model_id or (model if is_hub_id(model) else os.path.basename(os.path.abspath(model)))
    if card is None:
        card = ModelCard(
            f"---\n{ModelCardData(library_name='transformers', tags=['bert']).to_yaml()}\n---\n\n# {title}\n"
        )
    data = card.data
    glue = eval_results_for_card(summary)
    kept = [r for r in (data.eval_results or []) if r.dataset_type != HUB_DATASET]  # a rerun replaces its scores
    data.eval_results = kept + glue
    data.model_name = data.model_name or title
    data.datasets = sorted({*(data.datasets or []), HUB_DATASET})
    rows = [f"| {RESULT_TITLES[name]} | {' | '.join(_shown(m))} |" for name, m in summary["tasks"].items()]
    average = (
        f"GLUE score (the leaderboard's average of the 8 tasks, WNLI skipped): **{100 * summary['glue_score']:.1f}**"
        if summary["glue_score"] is not None
        else f"Average of the tasks run (not a GLUE score, which needs all 8): {100 * summary['average']:.1f}"
    )
    protocol = (
        "every task fine-tuned from this checkpoint"
        if summary["protocol"] == "direct"
        else "RTE, MRPC and STS-B fine-tuned from the MNLI model of the same seed, the other tasks from this checkpoint"
    )
    section = (
        "\n## GLUE (dev sets)\n\n"
        f"Scored by `minibert-evaluate glue` on the dev sets of {HUB_DATASET}: {protocol}; each task fine-tuned "
        f"{len(summary['seeds'])} times (seeds {', '.join(map(str, summary['seeds']))}) with `minibert-finetune`'s "
        "code and scored after the last epoch; mean ± standard deviation over the seeds, x100. "
        f"Hyper-parameters: finetune/configs/glue.yaml{' with ' + os.path.basename(args.hyperparameters) if args.hyperparameters else ''}. "
        f"Evaluated checkpoint: `{shown}`.\n\n"
        "| task | metric | score |\n| --- | --- | --- |\n" + "\n".join(rows) + f"\n\n{average}\n"
    )
    text = card.text
    marker = "\n## GLUE (dev sets)\n"
    if marker in text:  # a rerun replaces its own section
        text = text[: text.index(marker)].rstrip("\n") + "\n"
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{text.rstrip()}\n{section}"))


def write_outputs(summary: dict, args: GlueArguments) -> None:
    out = args.output_dir
    write_json(os.path.join(out, RESULTS_FILE), summary)
    write_chart(summary, os.path.join(out, CHART_FILE))
    with open(os.path.join(out, CARD_FILE), "w", encoding="utf-8") as f:
        f.write(model_card(summary, args))
    print("\n" + format_table(summary))
    print(
        f"\n{os.path.join(out, RESULTS_FILE)}, {os.path.join(out, CHART_FILE)}; {os.path.join(out, CARD_FILE)}: the "
        "checkpoint's card with these scores (copy it beside the weights, or push it)"
    )


# ---------------------------------------------------------------------------------------------------------------
# CLI

SUITES = ("glue",)
USAGE = (
    "usage: minibert-evaluate glue --model_name_or_path M --output_dir O [--data_dir glue_data] [--tasks cola,sst2,...] "
    "[--seeds 3] [--protocol direct|mnli-init] [--hyperparameters FILE]  (minibert-evaluate glue --help: every flag)"
)


def cli_main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return {}
    suite, *rest = argv
    if suite not in SUITES:
        raise UserError(f"unknown benchmark suite {suite!r}: minibert-evaluate runs {', '.join(SUITES)}")
    (args,) = parse_args((GlueArguments,), rest, prog="minibert-evaluate glue")
    finetune_train.setup_process()
    return evaluate_glue(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 2 a user error (one `error:` line), 128 + signal when SIGTERM / SIGINT stopped a run
    (the finished runs are kept: rerun the same command to continue)."""
    return run_cli(cli_main, argv)


if __name__ == "__main__":
    sys.exit(main())
