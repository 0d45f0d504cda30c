"""From data files (or a `datasets` dataset) to tokenized train / validation / test splits.

Steps, each a plain function on Python lists so that it can be tested without a model:

1. `read_data_file` / `load_splits`: CSV, TSV, JSON (a list of records) or JSON Lines, or `datasets.load_dataset`,
   into `RawSplit`s that remember where every row came from ("line 12"), for error messages.
2. `resolve_text_columns`: `--text_column` / `--text_pair_column`, or the usual names (`sentence1`/`sentence2`,
   `question1`/`question2`, `premise`/`hypothesis`, `question`/`sentence`, `sentence`, `text`).
3. `infer_label_space`: the problem type and the label names from the training labels: strings -> classes named by
   the strings (sorted); integers -> classes whose ids are the integers (names from a `ClassLabel` feature when there
   is one); floats -> regression (one output); lists -> multi-label (multi-hot targets, BCE loss).
4. `drop_incomplete_rows`: rows with an empty text or a missing label are dropped from train / validation, with a
   warning giving the count and where they are (a few blank lines in a scraped CSV should not stop a run).
   `build_examples` checks that validation labels were all seen in training and encodes labels as model targets.
5. `tokenize_examples`: `datasets.Dataset.map` over the tokenizer, no padding (the collator pads each batch).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from typing import Any

from minibert.checks import check_input_path
from minibert.cli import UserError

from .metrics import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Column names tried in order when --text_column is not given: pairs first, then single sentences.
DEFAULT_TEXT_PAIRS = (
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
)
DEFAULT_TEXT_COLUMNS = ("sentence", "text")
FILE_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl")
SHOWN_ROWS = 5  # how many row locations an error or a warning quotes


@dataclass
class RawSplit:
    """One split as columns of Python values, plus where each row came from."""

    name: str  # train / validation / test
    source: str  # "train_file data/train.csv", "dataset glue/sst2 split 'train'"
    columns: dict[str, list[Any]]
    locations: list[str]  # "line 12" / "item 3" / "index 7", one per row
    label_names: dict[str, list[str]] = field(default_factory=dict)  # column -> ClassLabel names

    def __len__(self) -> int:
        return len(self.locations)

    def column_list(self) -> str:
        return ", ".join(self.columns) or "(none)"

    def select(self, indices: list[int], name: str | None = None) -> RawSplit:
        return RawSplit(
            name=name or self.name,
            source=self.source,
            columns={k: [v[i] for i in indices] for k, v in self.columns.items()},
            locations=[self.locations[i] for i in indices],
            label_names=self.label_names,
        )


@dataclass
class LabelSpace:
    """What the classifier predicts: the problem type and, for classification, the name of every output."""

    problem_type: str
    names: list[str]  # id -> name; [] for regression
    seen: set  # label values seen in training (list elements for multi-label); empty for regression
    raw_to_id: dict  # label value -> id, for classification
    integer_ids: bool = False  # the labels are class ids (integers), not names

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == REGRESSION else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names)) if self.names else {0: "LABEL_0"}

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}

    def key(self, value: Any) -> Any:
        """A label value as the key it has in `seen` / `raw_to_id` ('2' and 2.0 are class 2 when ids are ints)."""
        if isinstance(value, bool):  # JSON true would collide with 1; booleans are names ("True"/"False")
            return str(value)
        if self.integer_ids:
            number = _parse_csv_value(value) if isinstance(value, str) else value
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            if isinstance(number, int):
                return number
        return value

    def items(self, value: Any) -> list:
        """The labels a row holds: one, or a list of them (multi-label)."""
        if self.problem_type == MULTI_LABEL and isinstance(value, (list, tuple)):
            return list(value)
        return [value]

    def encode(self, value: Any) -> Any:
        if self.problem_type == REGRESSION:
            return float(value)
        if self.problem_type == SINGLE_LABEL:
            return self.raw_to_id[self.key(value)]
        target = [0.0] * len(self.names)  # multi-hot
        for item in self.items(value):
            target[self.raw_to_id[self.key(item)]] = 1.0
        return target


@dataclass
class Examples:
    """A split ready for the tokenizer: texts, optional second texts, model targets (None: no labels)."""

    texts: list[str]
    text_pairs: list[str] | None
    labels: list[Any] | None

    def __len__(self) -> int:
        return len(self.texts)


# ---------------------------------------------------------------------------------------------------------------
# 1. Reading


def _parse_csv_value(value: str) -> Any:
    """A CSV cell as the label it spells: '' -> None, '3' -> 3, '0.5' -> 0.5, anything else the string."""
    value = value.strip()
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return None if math.isnan(number) else number


def read_data_file(path: str, split: str, label_column: str | None = None) -> RawSplit:
    """Read a CSV / TSV (header row; TSV fields unquoted), JSON (a list of records, or {"data": [...]}) or JSON Lines.

    CSV cells are strings; the label column is parsed into numbers when every non-empty cell is one (so that
    '0'/'1' are integer classes and '0.25' a regression target). JSON keeps its own types.
    """
    source = f"{split}_file {path}"
    check_input_path(path, f"--{split}_file")  # missing, a folder, /dev/null or a named pipe: said as such
    extension = os.path.splitext(path)[1].lower()
    if extension not in FILE_EXTENSIONS:
        raise UserError(f"--{split}_file {path}: unsupported extension {extension!r}; use one of {FILE_EXTENSIONS}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark is no header
            if extension in (".csv", ".tsv"):
                records, locations = _read_csv(f, "\t" if extension == ".tsv" else ",", path)
            else:
                records, locations = _read_json(f, path, lines=extension == ".jsonl")
    except UnicodeDecodeError as e:
        raise UserError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not records:
        raise UserError(f"{source}: no records")
    names: list[str] = []
    for record in records:  # union of keys, in order of first appearance
        for key in record:
            if key not in names:
                names.append(key)
    columns = {name: [record.get(name) for record in records] for name in names}
    if extension in (".csv", ".tsv") and label_column in columns:
        parsed = [_parse_csv_value(v) if isinstance(v, str) else v for v in columns[label_column]]
        present = [v for v in parsed if v is not None]
        if present and all(isinstance(v, (int, float)) for v in present):
            columns[label_column] = parsed
        else:  # string labels: only empty cells become missing
            columns[label_column] = [
                None if (v is None or v.strip() == "") else v.strip() for v in columns[label_column]
            ]
    return RawSplit(name=split, source=source, columns=columns, locations=locations)


def _read_csv(f, delimiter: str, path: str) -> tuple[list[dict], list[str]]:
    # TSV fields are not quoted (GLUE's files hold unbalanced quotes inside sentences). CSV follows RFC 4180,
    # strictly: a quote left open would otherwise swallow the lines after it into one cell, silently.
    tsv = delimiter == "\t"
    reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=not tsv)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as e:
        raise UserError(f"{path}: cannot parse the header: {_csv_problem(e, 1, reader.line_num)}") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise UserError(f"{path}: repeated column names in the header: {', '.join(header)}")
    records, locations = [], []
    start = reader.line_num + 1  # the line the next record starts on
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):  # else a blank line
                if len(row) > len(header):
                    raise UserError(
                        f"{path} line {reader.line_num}: {len(row)} fields but the header has {len(header)} "
                        f"(a field with a {delimiter!r} inside needs double quotes)"
                    )
                if len(row) < len(header) and reader.line_num > start:  # a quote that closed lines too late
                    raise UserError(
                        f"{path} line {start}: a quoted field opened on line {start} runs on to line "
                        f"{reader.line_num}, and the record has {len(row)} of the header's {len(header)} fields: an "
                        "unterminated quote? Close it"
                    )
                records.append(dict(zip(header, row + [""] * (len(header) - len(row)))))
                locations.append(f"line {start}")
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path} line {start}: {_csv_problem(e, start, reader.line_num)}") from None
    return records, locations


def _csv_problem(error: csv.Error, start: int, end: int) -> str:
    """What the csv module's complaint means for the user, with the lines a quote left open ran over."""
    if end > start:
        return (
            f"a quoted field opened on line {start} runs on to line {end} ({error}): an unterminated quote? Close "
            'it, or double a quote inside a quoted field ("")'
        )
    return f'{error} (a quote inside a quoted field is written twice: "")'


def _read_json(f, path: str, lines: bool) -> tuple[list[dict], list[str]]:
    """JSON Lines (`.jsonl`, or a `.json` file that is not one JSON document), or a JSON list of records."""
    text = f.read()
    data = None
    if not lines:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass  # perhaps JSON Lines under a .json name, as `datasets` also accepts
    if isinstance(data, dict):
        # {"data": [...]}: the layout of `datasets`' json builder with field="data"; any other object is one record.
        lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        data = lists[0] if len(lists) == 1 else [data]
    if data is not None:
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a list of records, got a JSON {type(data).__name__}")
        records, locations = data, [f"item {i}" for i in range(len(data))]
    else:
        records, locations = [], []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {line_number}: invalid JSON: {e.msg}") from None
            locations.append(f"line {line_number}")
    for record, location in zip(records, locations):
        if not isinstance(record, dict):
            raise UserError(f"{path} {location}: expected an object with named fields, got {type(record).__name__}")
    return records, locations


def _load_dataset(data_args, cache_dir: str | None = None) -> dict[str, RawSplit]:
    """`--dataset_name`: a dataset saved with `save_to_disk`, or anything `datasets.load_dataset` accepts."""
    import datasets

    name, config = data_args.dataset_name, data_args.dataset_config_name
    label = f"{name}/{config}" if config else name
    try:
        if os.path.isdir(name) and (
            os.path.isfile(os.path.join(name, "dataset_dict.json")) or os.path.isfile(os.path.join(name, "state.json"))
        ):
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, config, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        raise UserError(f"cannot load dataset {label}: {e}") from None
    except Exception as e:  # datasets' own errors (DatasetNotFoundError, ...) have no common base worth naming
        raise UserError(f"cannot load dataset {label}: {type(e).__name__}: {e}") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    wanted = {
        "train": data_args.train_split_name,
        "validation": data_args.validation_split_name,
        "test": data_args.test_split_name,
    }
    if wanted["train"] not in loaded:
        raise UserError(f"dataset {label} has no split {wanted['train']!r} (splits: {', '.join(loaded)})")
    splits = {}
    for split, split_name in wanted.items():
        if split_name not in loaded:
            continue
        dataset = loaded[split_name]
        label_names = {}
        for column, feature in dataset.features.items():
            names = _class_label_names(feature)
            if names is not None:
                label_names[column] = names
        splits[split] = RawSplit(
            name=split,
            source=f"dataset {label} split {split_name!r}",
            columns={column: list(dataset[column]) for column in dataset.column_names},
            locations=[f"index {i}" for i in range(len(dataset))],
            label_names=label_names,
        )
    return splits


def _class_label_names(feature) -> list[str] | None:
    """Names of a `ClassLabel` feature, or of the `ClassLabel` inside a list feature (multi-label)."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)  # datasets.Sequence / datasets.List
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return None


def load_splits(data_args, cache_dir: str | None = None) -> dict[str, RawSplit]:
    """The train split, and validation / test when given (validation split off the training data otherwise)."""
    if data_args.dataset_name:
        splits = _load_dataset(data_args, cache_dir)
    else:
        splits = {}
        for split in SPLITS:
            path = getattr(data_args, f"{split}_file")
            if path:
                splits[split] = read_data_file(path, split, data_args.label_column)
    if "train" not in splits:
        raise UserError("no training data: pass --train_file (or --dataset_name)")
    return splits


def split_off_validation(train: RawSplit, percentage: float, seed: int) -> tuple[RawSplit, RawSplit]:
    """Move a seeded random `percentage` of the training rows into a validation split."""
    n = len(train)
    n_validation = max(1, round(n * percentage / 100))
    if n - n_validation < 1:
        raise UserError(f"{train.source}: {n} rows are too few to split off a validation set; pass --validation_file")
    indices = list(range(n))
    random.Random(seed).shuffle(indices)
    validation = sorted(indices[:n_validation])
    rest = sorted(indices[n_validation:])
    logger.info(
        "no validation data: using %d of the %d training rows (%s%%) for validation", n_validation, n, percentage
    )
    held_out = train.select(validation, name="validation")
    held_out.source = f"{train.source} (held-out {percentage}%)"
    return train.select(rest), held_out


# ---------------------------------------------------------------------------------------------------------------
# 2. Columns


def resolve_text_columns(
    train: RawSplit, text_column: str | None, text_pair_column: str | None
) -> tuple[str, str | None]:
    columns = train.columns
    if text_column is None:
        if text_pair_column is not None:
            raise UserError("--text_pair_column needs --text_column")
        for first, second in DEFAULT_TEXT_PAIRS:
            if first in columns and second in columns:
                return first, second
        for name in DEFAULT_TEXT_COLUMNS:
            if name in columns:
                return name, None
        raise UserError(
            f"{train.source}: cannot tell which column holds the text (none of "
            f"{', '.join(n for pair in DEFAULT_TEXT_PAIRS for n in pair)}, {', '.join(DEFAULT_TEXT_COLUMNS)}); "
            f"pass --text_column (columns: {train.column_list()})"
        )
    for flag, name in (("--text_column", text_column), ("--text_pair_column", text_pair_column)):
        if name is not None and name not in columns:
            raise UserError(f"{train.source} has no column {name!r} ({flag}); columns: {train.column_list()}")
    return text_column, text_pair_column


def check_columns(split: RawSplit, text_columns: tuple[str, str | None], label_column: str, needs_labels: bool) -> None:
    for name in text_columns:
        if name is not None and name not in split.columns:
            raise UserError(f"{split.source} has no text column {name!r}; columns: {split.column_list()}")
    if needs_labels and label_column not in split.columns:
        raise UserError(
            f"{split.source} has no label column {label_column!r} (--label_column); columns: {split.column_list()}"
        )


# ---------------------------------------------------------------------------------------------------------------
# 3. Labels


def _is_missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _kind(value: Any) -> str:
    if isinstance(value, (bool, str)):
        return "str"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def infer_label_space(train: RawSplit, label_column: str, problem_type: str | None = None) -> LabelSpace:
    values = [v for v in train.columns[label_column] if not _is_missing(v)]
    if not values:
        raise UserError(f"{train.source}: the label column {label_column!r} is empty")
    kinds = {_kind(v) for v in values}
    class_names = train.label_names.get(label_column)
    where = f"{train.source}: labels in column {label_column!r}"

    if problem_type is None:
        if "list" in kinds:
            problem_type = MULTI_LABEL
        elif kinds == {"float"} or kinds == {"int", "float"}:
            problem_type = REGRESSION
            logger.info("%s are numbers with decimals: regression (one output, MSE loss)", where)
        else:
            problem_type = SINGLE_LABEL
    elif problem_type not in PROBLEM_TYPES:
        raise UserError(f"--problem_type must be one of {', '.join(PROBLEM_TYPES)}, not {problem_type!r}")

    if problem_type == MULTI_LABEL:
        if kinds != {"list"}:
            raise UserError(
                f"{where}: multi-label classification needs a list of labels in every row, found {_kinds(kinds)}"
            )
        items = [item for v in values for item in v]
        item_kinds = {_kind(item) for item in items}
        if not items:
            raise UserError(f"{where}: every list is empty")
        return _classes(where, items, item_kinds, class_names, MULTI_LABEL)
    if "list" in kinds:
        raise UserError(f"{where}: mixes lists with single labels")
    if problem_type == REGRESSION:
        if not kinds <= {"int", "float"}:
            raise UserError(f"{where}: regression needs numbers, found {_kinds(kinds)}")
        bad = [v for v in values if not math.isfinite(v)]
        if bad:  # one inf target makes every weight NaN after the first step
            raise UserError(f"{where}: regression targets must be finite numbers, found {bad[0]} ({len(bad)} rows)")
        return LabelSpace(REGRESSION, names=[], seen=set(), raw_to_id={})
    if kinds == {"float"} or kinds == {"int", "float"}:  # --problem_type single_label_classification on floats
        bad = [v for v in values if isinstance(v, float) and not v.is_integer()]
        if bad:
            raise UserError(f"{where}: {bad[0]} is not a class id (pass --problem_type regression for scores)")
        column = train.columns[label_column]
        train.columns[label_column] = [int(v) if isinstance(v, float) and not math.isnan(v) else v for v in column]
        values = [int(v) for v in values]
        kinds = {"int"}
    space = _classes(where, values, kinds, class_names, SINGLE_LABEL)
    if len(space.seen) < 2:
        raise UserError(f"{where}: only one class ({next(iter(space.seen))!r}); a classifier needs at least two")
    return space


def _kinds(kinds: set[str]) -> str:
    return " and ".join(
        sorted({"str": "strings", "int": "integers", "float": "floats", "list": "lists"}.get(k, k) for k in kinds)
    )


def _classes(where: str, values: list, kinds: set[str], class_names: list[str] | None, problem_type: str) -> LabelSpace:
    if kinds == {"int"}:
        negative = sorted({v for v in values if v < 0})
        if negative:
            raise UserError(f"{where}: integer labels are class ids and must be >= 0, found {negative[:SHOWN_ROWS]}")
        num_labels = max(values) + 1
        distinct = len(set(values))
        if class_names is None and num_labels > max(2 * distinct, distinct + 100):
            # Integer labels are class ids 0..N-1: ids like {0, 300000} would build a head of 300,001 classes.
            raise UserError(
                f"{where}: {distinct} distinct integer labels but ids up to {num_labels - 1}; integer labels are class "
                "ids 0..N-1: renumber them, or use strings for class names"
            )
        if class_names is not None:
            if num_labels > len(class_names):
                raise UserError(
                    f"{where}: id {num_labels - 1} but the ClassLabel feature names {len(class_names)} classes"
                )
            names = class_names
        else:
            names = [str(i) for i in range(num_labels)]
        return LabelSpace(
            problem_type,
            names=list(names),
            seen=set(values),
            raw_to_id={i: i for i in range(len(names))},
            integer_ids=True,
        )
    if kinds == {"str"}:
        names = sorted({str(v) for v in values})
        return LabelSpace(problem_type, names=names, seen=set(names), raw_to_id={n: i for i, n in enumerate(names)})
    raise UserError(f"{where}: mixes {_kinds(kinds)}; use one type (strings for names, integers for class ids)")


# ---------------------------------------------------------------------------------------------------------------
# 4. Examples


def drop_incomplete_rows(split: RawSplit, text_columns: tuple[str, str | None], label_column: str) -> RawSplit:
    """The rows with a text (both texts, for pairs) and a label; a warning says how many others there were and where.

    Dropping rather than stopping: a few blank lines in a scraped CSV should not end a run, and the warning names
    them. A split with no complete row at all is an error.
    """
    text_column, pair_column = text_columns
    texts, labels = split.columns[text_column], split.columns[label_column]
    pairs = split.columns[pair_column] if pair_column else None
    keep, dropped = [], []
    for i in range(len(split)):
        empty = _is_missing(texts[i]) or (pairs is not None and _is_missing(pairs[i])) or _is_missing(labels[i])
        (dropped if empty else keep).append(i)
    if not keep:
        raise UserError(f"{split.source}: no row has both a text and a label")
    if not dropped:
        return split
    shown = ", ".join(split.locations[i] for i in dropped[:SHOWN_ROWS])
    more = f" and {len(dropped) - SHOWN_ROWS} more" if len(dropped) > SHOWN_ROWS else ""
    logger.warning(
        "%s: dropped %d of %d rows with an empty text or a missing label (%s%s)",
        split.source,
        len(dropped),
        len(split),
        shown,
        more,
    )
    return split.select(keep)


def build_examples(
    split: RawSplit,
    text_columns: tuple[str, str | None],
    label_column: str,
    labels: LabelSpace,
    max_samples: int | None = None,
) -> Examples:
    """Texts and encoded labels of one split (train / validation: after `drop_incomplete_rows`).

    A validation label never seen in training is an error. test: every row is kept (its predictions line up with
    the file); its labels are used for test metrics only when every row has a known one.
    """
    text_column, pair_column = text_columns
    texts = split.columns[text_column]
    pairs = split.columns[pair_column] if pair_column else None
    raw_labels = split.columns.get(label_column)
    keep = list(range(len(split)))
    if split.name == "validation" and labels.problem_type != REGRESSION:
        _check_seen(split, raw_labels, labels, label_column)
    if max_samples is not None:
        keep = keep[:max_samples]
    encoded = None
    if raw_labels is not None and split.name != "test":
        encoded = [labels.encode(raw_labels[i]) for i in keep]
    elif raw_labels is not None:
        encoded = _test_labels([raw_labels[i] for i in keep], labels, split.source)
    return Examples(
        texts=[_text(texts[i]) for i in keep],
        text_pairs=[_text(pairs[i]) for i in keep] if pairs is not None else None,
        labels=encoded,
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _check_seen(split: RawSplit, raw: list, labels: LabelSpace, column: str) -> None:
    unseen: dict = {}
    for value, location in zip(raw, split.locations):
        for item in labels.items(value):
            key = labels.key(item)
            if key not in labels.seen:
                unseen.setdefault(key, location)
    if unseen:
        shown = ", ".join(f"{k!r} ({loc})" for k, loc in list(unseen.items())[:SHOWN_ROWS])
        known = ", ".join(repr(k) for k in sorted(labels.seen, key=str))
        raise UserError(
            f"{split.source}: label(s) never seen in training in column {column!r}: {shown}; training labels: {known}"
        )


def _test_labels(raw: list, labels: LabelSpace, source: str) -> list | None:
    """Encoded test labels when every row has a usable one; None (predictions only) otherwise."""
    if any(_is_missing(v) for v in raw):
        logger.info("%s: some rows have no label; writing predictions without test metrics", source)
        return None
    if labels.problem_type != REGRESSION:
        known = all(labels.key(item) in labels.seen for v in raw for item in labels.items(v))
        if not known:
            logger.info("%s: some labels were never seen in training (e.g. -1 for 'unknown'); no test metrics", source)
            return None
    elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        return None
    return [labels.encode(v) for v in raw]


# ---------------------------------------------------------------------------------------------------------------
# 5. Tokenization


def tokenize_examples(examples: Examples, tokenizer, max_seq_length: int, problem_type: str):
    """A `datasets.Dataset` of input_ids / token_type_ids / attention_mask (+ labels), unpadded."""
    import datasets

    columns: dict[str, list] = {"text": examples.texts}
    if examples.text_pairs is not None:
        columns["text_pair"] = examples.text_pairs
    if examples.labels is not None:
        columns["labels"] = examples.labels
    features = {"text": datasets.Value("string")}
    if examples.text_pairs is not None:
        features["text_pair"] = datasets.Value("string")
    if examples.labels is not None:
        features["labels"] = {
            SINGLE_LABEL: datasets.Value("int64"),
            REGRESSION: datasets.Value("float32"),
            MULTI_LABEL: datasets.Sequence(datasets.Value("float32")),
        }[problem_type]
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    def tokenize(batch):
        return tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_seq_length)

    remove = [c for c in ("text", "text_pair") if c in columns]
    return dataset.map(tokenize, batched=True, remove_columns=remove, desc="Tokenizing")
