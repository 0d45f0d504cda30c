"""finetune.data and finetune.demo without a model: reading files, columns, labels, bad input, the demo task."""

import json
import logging
import re

import pytest
from conftest import write_jsonl

from finetune.args import DataArguments, FinetuneArguments, ModelArguments
from finetune.data import read_data_file
from finetune.demo import TOPIC_GROUPS, make_demo_splits, topic_sentences, write_demo_data
from finetune.metrics import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from finetune.train import prepare_data
from minibert.cli import HubArguments, UserError, parse_args


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def prepare(**kwargs):
    return prepare_data(DataArguments(**kwargs), seed=0)


# ----------------------------------------------------------------------------------------------------------------
# Reading


def test_csv_tsv_json_and_jsonl_read_alike(tmp_path):
    rows = [{"text": "good, really", "label": "pos"}, {"text": "bad", "label": "neg"}]
    files = [
        write(tmp_path / "a.csv", 'text,label\n"good, really",pos\nbad,neg\n'),
        write(tmp_path / "a.tsv", "text\tlabel\ngood, really\tpos\nbad\tneg\n"),
        write(tmp_path / "a.json", json.dumps(rows)),
        write(tmp_path / "b.json", json.dumps({"data": rows})),
        write_jsonl(tmp_path / "a.jsonl", rows),
    ]
    for path in files:
        split = read_data_file(path, "train", "label")
        assert split.columns == {"text": ["good, really", "bad"], "label": ["pos", "neg"]}, path
    assert read_data_file(files[0], "train").locations == ["line 2", "line 3"]
    # A spreadsheet's byte-order mark is not part of the first column's name; TSV quotes are text (as in GLUE).
    excel = read_data_file(write(tmp_path / "e.csv", "\ufefftext,label\nok,pos\n"), "train", "label")
    assert list(excel.columns) == ["text", "label"]
    glue = read_data_file(write(tmp_path / "g.tsv", "sentence\tlabel\nit 's a \"great film\t1\n"), "train", "label")
    assert glue.columns == {"sentence": ["it 's a \"great film"], "label": [1]}
    assert read_data_file(files[3], "train").locations == ["item 0", "item 1"]


def test_csv_labels_are_parsed_as_numbers_only_when_all_are(tmp_path):
    ints = read_data_file(write(tmp_path / "i.csv", "text,label\na,1\nb,\nc,0\n"), "train", "label")
    assert ints.columns["label"] == [1, None, 0]  # an empty cell is a missing label, not a float NaN
    floats = read_data_file(write(tmp_path / "f.csv", "text,label\na,1\nb,0.5\n"), "train", "label")
    assert floats.columns["label"] == [1, 0.5]
    names = read_data_file(write(tmp_path / "s.csv", "text,label\na,1\nb,pos\n"), "train", "label")
    assert names.columns["label"] == ["1", "pos"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.txt", "hello", "unsupported extension"),
        ("x.jsonl", '{"text": "a"}\n{"text": \n', "line 2: invalid JSON"),
        ("x.csv", "text,label\na,b,c\n", "line 2: 3 fields but the header has 2"),
        ("x.json", "[1, 2]", "expected an object"),
        ("x.csv", "text,label\n", "no records"),
    ],
)
def test_unreadable_files_are_user_errors(tmp_path, name, content, message):
    with pytest.raises(UserError, match=re.escape(message)):
        read_data_file(write(tmp_path / name, content), "train")
    with pytest.raises(UserError, match="no such file"):
        read_data_file(str(tmp_path / "missing.csv"), "train")


# ----------------------------------------------------------------------------------------------------------------
# Columns and labels


def test_default_text_columns(tmp_path):
    pair = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"sentence1": "a", "sentence2": "b", "sentence": "c", "label": 0},
            {"sentence1": "d", "sentence2": "e", "sentence": "f", "label": 1},
        ],
    )
    assert prepare(train_file=pair, validation_split_percentage=0).text_columns == ("sentence1", "sentence2")
    single = write_jsonl(tmp_path / "s.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    prepared = prepare(train_file=single, validation_split_percentage=0)
    assert prepared.text_columns == ("text", None)
    assert prepared.splits["train"].text_pairs is None


def test_missing_columns_name_the_columns_that_exist(tmp_path):
    path = write(tmp_path / "t.csv", "review,stars\ngreat,5\nawful,1\n")
    with pytest.raises(UserError, match=r"pass --text_column \(columns: review, stars\)"):
        prepare(train_file=path)
    with pytest.raises(UserError, match=r"no label column 'label' \(--label_column\); columns: review, stars"):
        prepare(train_file=path, text_column="review")
    with pytest.raises(UserError, match=r"no column 'body' \(--text_column\); columns: review, stars"):
        prepare(train_file=path, text_column="body", label_column="stars")
    validation = write(tmp_path / "v.csv", "review\nok\n")
    with pytest.raises(UserError, match=r"v.csv has no label column 'stars'.*columns: review"):
        prepare(train_file=path, validation_file=validation, text_column="review", label_column="stars")


def test_label_kinds(tmp_path):
    def space(labels, **kwargs):
        path = write_jsonl(tmp_path / "l.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)])
        return prepare(train_file=path, validation_split_percentage=0, **kwargs).labels

    strings = space(["pos", "neg", "pos"])
    assert (strings.problem_type, strings.names) == (SINGLE_LABEL, ["neg", "pos"])
    ints = space([0, 2, 2])  # integers keep their values as ids; 1 is a class never seen, still an output
    assert (ints.problem_type, ints.names, ints.encode(2)) == (SINGLE_LABEL, ["0", "1", "2"], 2)
    floats = space([0.5, 1, 3.25])
    assert (floats.problem_type, floats.num_labels, floats.encode(1)) == (REGRESSION, 1, 1.0)
    forced = space([0.0, 1.0, 1.0], problem_type=SINGLE_LABEL)
    assert (forced.problem_type, forced.names) == (SINGLE_LABEL, ["0", "1"])
    multi = space([["sports", "news"], [], ["tech"]])
    assert (multi.problem_type, multi.names) == (MULTI_LABEL, ["news", "sports", "tech"])
    assert multi.encode(["tech", "news"]) == [1.0, 0.0, 1.0]
    assert multi.id2label == {0: "news", 1: "sports", 2: "tech"} and multi.label2id["tech"] == 2

    for labels, message in [
        ([1, "pos"], "mixes integers and strings"),
        ([-1, 1], "must be >= 0"),
        (["pos", "pos"], "only one class"),
        ([["a"], "b"], "needs a list of labels in every row, found lists and strings"),
        (["a", "b"], None),
    ]:
        if message is None:
            with pytest.raises(UserError, match="multi-label classification needs a list"):
                space(labels, problem_type=MULTI_LABEL)
        else:
            with pytest.raises(UserError, match=message):
                space(labels)


def test_class_label_names_from_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        }
    )
    rows = {"premise": ["a", "b", "c", "d"], "hypothesis": ["e", "f", "g", "h"], "label": [0, 2, 1, 2]}
    dataset = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows, features=features),
            "validation": datasets.Dataset.from_dict({k: v[:2] for k, v in rows.items()}, features=features),
        }
    )
    dataset.save_to_disk(str(tmp_path / "nli"))
    prepared = prepare(dataset_name=str(tmp_path / "nli"))
    assert prepared.labels.names == ["entailment", "neutral", "contradiction"]
    assert prepared.text_columns == ("premise", "hypothesis")
    assert prepared.splits["train"].labels == [0, 2, 1, 2]
    assert len(prepared.splits["validation"]) == 2
    with pytest.raises(UserError, match="no split 'dev'"):
        prepare(dataset_name=str(tmp_path / "nli"), train_split_name="dev")


# ----------------------------------------------------------------------------------------------------------------
# Bad rows


def test_empty_rows_are_dropped_with_a_warning_that_says_where(tmp_path, caplog):
    path = write(tmp_path / "t.csv", "text,label\ngood,pos\n,neg\nbad,\n   ,pos\nfine,neg\n")
    with caplog.at_level(logging.WARNING, logger="finetune"):
        prepared = prepare(train_file=path, validation_split_percentage=0)
    assert prepared.splits["train"].texts == ["good", "fine"]
    assert "dropped 3 of 5 rows with an empty text or a missing label (line 3, line 4, line 5)" in caplog.text
    nothing = write(tmp_path / "n.csv", "text,label\n,pos\nx,\n")
    with pytest.raises(UserError, match="no row has both a text and a label"):
        prepare(train_file=nothing, validation_split_percentage=0, problem_type=SINGLE_LABEL)


def test_validation_label_never_seen_in_training(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,pos\nb,neg\n")
    validation = write(tmp_path / "v.csv", "text,label\nc,pos\nd,maybe\n")
    with pytest.raises(UserError, match=r"never seen in training.*'maybe' \(line 3\); training labels: 'neg', 'pos'"):
        prepare(train_file=train, validation_file=validation)
    # Integer ids: "2" and 2.0 are the same class as 2, and a class never trained on is still an error.
    train_ids = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 2}])
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"text": "c", "label": 2.0}])
    assert prepare(train_file=train_ids, validation_file=ok).splits["validation"].labels == [2]
    gap = write_jsonl(tmp_path / "gap.jsonl", [{"text": "c", "label": 1}])
    with pytest.raises(UserError, match=r"never seen in training.*1 \(line 1\)"):
        prepare(train_file=train_ids, validation_file=gap)


def test_test_split_keeps_every_row_and_labels_are_optional(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,pos\nb,neg\n")
    no_labels = write(tmp_path / "x.csv", "text\nc\n\nd\n")  # the blank line is skipped, not a row
    prepared = prepare(train_file=train, test_file=no_labels, validation_split_percentage=0)
    assert prepared.splits["test"].texts == ["c", "d"] and prepared.splits["test"].labels is None
    glue_style = write(tmp_path / "g.csv", "text,label\nc,-1\n,-1\n")  # GLUE test sets: label -1, an empty text
    prepared = prepare(train_file=train, test_file=glue_style, validation_split_percentage=0)
    assert prepared.splits["test"].texts == ["c", ""] and prepared.splits["test"].labels is None
    labelled = write(tmp_path / "l.csv", "text,label\nc,neg\n")
    assert prepare(train_file=train, test_file=labelled, validation_split_percentage=0).splits["test"].labels == [0]


def test_validation_split_off_training_data(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(50)])
    prepared = prepare(train_file=path, validation_split_percentage=20)
    train, validation = prepared.splits["train"].texts, prepared.splits["validation"].texts
    assert (len(train), len(validation)) == (40, 10) and not set(train) & set(validation)
    assert prepare(train_file=path, validation_split_percentage=20).splits["validation"].texts == validation


def test_argument_errors_are_user_errors():
    types = (ModelArguments, DataArguments, FinetuneArguments, HubArguments)
    for argv, message in [
        (["--dataset_name", "glue", "--train_file", "a.csv"], "either --dataset_name or --train_file"),
        (["--validation_file", "v.csv"], "need --train_file"),
        (["--problem_type", "ranking"], "--problem_type must be one of"),
        (["--warmup_ratio", "1.5"], "--warmup_ratio must be in"),
        (["--push_to_hub", "true"], "--push_to_hub needs --hub_model_id"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_args(types, argv)
    _, data_args, training_args, _ = parse_args(types, ["--train_file", "a.csv", "--max_train_steps", "7"])
    assert (data_args.train_file, training_args.max_train_steps, training_args.output_dir) == (
        "a.csv",
        7,
        "outputs/finetune",
    )


# ----------------------------------------------------------------------------------------------------------------
# The demo task


def test_demo_task_is_deterministic_unambiguous_and_split_by_sentence(tmp_path):
    splits = make_demo_splits()
    assert splits == make_demo_splits()
    assert len(splits["train"]) > 1000 and len(splits["validation"]) > 100 and len(splits["test"]) > 100
    sentences = {name: [r["sentence"] for r in rows] for name, rows in splits.items()}
    assert not set(sentences["train"]) & set(sentences["test"])
    assert not set(sentences["train"]) & set(sentences["validation"])
    for rows in splits.values():
        assert {r["label"] for r in rows} == set(TOPIC_GROUPS)
    # Each sentence carries the part of the reference its topic belongs to, and no other part has it.
    from pydoc_data.topics import topics

    row = splits["test"][0]
    owners = {
        label
        for label, keys in TOPIC_GROUPS.items()
        for key in keys
        if row["sentence"] in topic_sentences(topics.get(key, ""))
    }
    assert owners == {row["label"]}
    paths = write_demo_data(str(tmp_path / "demo"))
    assert open(paths["train"]).readline().strip() == "sentence,label"
