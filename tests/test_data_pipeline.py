"""`prepare_pretraining_data` end to end, on corpora generated here.

Every sentence starts with `dNNN sMMM` (its document and position), and the test tokenizer has those words
as single tokens, so any instance can be traced back to the documents and sentences it was cut from.
"""

import json
import os
import random
import subprocess
import sys

import pytest
from conftest import write_corpus
from datasets import Dataset, DatasetDict, IterableDataset
from transformers import AutoTokenizer, BertTokenizer

from minibert.cli import UserError, parse_args
from pretrain.collator import DataCollatorForPreTraining
from pretrain.data import DataArguments, PretrainingData, prepare_pretraining_data

FILLER = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
]
N_DOCS, MAX_SENTENCES = 240, 30


def make_corpus(n_docs=N_DOCS, seed=0, sentences=(5, MAX_SENTENCES), first_doc=0):
    rng = random.Random(seed)
    return [
        [
            f"d{d} s{s} " + " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 10))) + " ."
            for s in range(rng.randint(*sentences))
        ]
        for d in range(first_doc, first_doc + n_docs)
    ]


@pytest.fixture(scope="module")
def marker_tokenizer(tmp_path_factory):
    words = [f"d{d}" for d in range(1000)] + [f"s{s}" for s in range(MAX_SENTENCES + 1)] + FILLER + ["."]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    directory = str(tmp_path_factory.mktemp("tokenizer"))
    BertTokenizer(vocab=vocab).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", make_corpus())


def prepare(cache, seed=0, **kwargs) -> PretrainingData:
    return prepare_pretraining_data(data_cache_dir=str(cache), seed=seed, **kwargs)


def prepare_marked(cache, corpus_file, marker_tokenizer, **kwargs) -> PretrainingData:
    """`prepare` on the marked corpus with the marker tokenizer, in sequences of 64 tokens."""
    return prepare(cache, train_file=[corpus_file], tokenizer_name=marker_tokenizer, max_seq_length=64, **kwargs)


class Tracer:
    """Maps a segment of token ids back to (document, start offset) in the document's token stream."""

    def __init__(self, tokenizer, documents_by_id):
        self.tokenizer = tokenizer
        self.streams, self.starts = {}, {}
        for d, doc in documents_by_id.items():
            stream, starts = [], []
            for sentence in doc:
                starts.append(len(stream))
                stream += tokenizer(sentence, add_special_tokens=False)["input_ids"]
            self.streams[d], self.starts[d] = stream, starts

    def locate(self, ids):
        """(document, offset of ids[0] in its stream), or None if no complete `dX sY` marker survived."""
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        for p in range(len(tokens) - 1):
            if tokens[p].startswith("d") and tokens[p + 1].startswith("s") and tokens[p][1:].isdigit():
                d, s = int(tokens[p][1:]), int(tokens[p + 1][1:])
                offset = self.starts[d][s] - p
                assert self.streams[d][offset : offset + len(ids)] == ids, "segment is not contiguous text"
                return d, offset
        return None


def split_instance(row, tokenizer, max_seq_length):
    ids, types = row["input_ids"], row["token_type_ids"]
    assert len(ids) <= max_seq_length and len(types) == len(ids)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids.count(tokenizer.sep_token_id) == 2
    first_sep = ids.index(tokenizer.sep_token_id)
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    a, b = ids[1:first_sep], ids[first_sep + 1 : -1]
    assert a and b
    return a, b


def check_provenance(dataset, tokenizer, tracer, max_seq_length):
    untraced = 0
    for row in dataset:
        a, b = split_instance(row, tokenizer, max_seq_length)
        where_a, where_b = tracer.locate(a), tracer.locate(b)
        if where_a is None or where_b is None:
            untraced += 1
            continue
        if row["next_sentence_label"] == 0:  # IsNext: B follows A in the same document
            assert where_a[0] == where_b[0] and where_b[1] >= where_a[1] + len(a)
            if len(a) + len(b) < max_seq_length - 3:  # not truncated: no gap at all
                assert where_b[1] == where_a[1] + len(a)
        else:
            assert where_a[0] != where_b[0]
    assert untraced < 0.02 * len(dataset)


def test_pairs_are_bert_instances_with_true_provenance_and_balanced_labels(tmp_path, corpus_file, marker_tokenizer):
    data = prepare_marked(tmp_path, corpus_file, marker_tokenizer, dupe_factor=6, validation_split_percentage=0)
    assert isinstance(data.train_dataset, Dataset) and data.eval_dataset is None
    assert set(data.train_dataset.column_names) >= {"input_ids", "token_type_ids", "next_sentence_label"}
    tokenizer = data.tokenizer
    tracer = Tracer(tokenizer, dict(enumerate(make_corpus())))
    check_provenance(data.train_dataset, tokenizer, tracer, 64)
    labels = data.train_dataset["next_sentence_label"]
    assert len(labels) > 5000
    assert abs(labels.count(0) / len(labels) - 0.5) < 0.03
    stats = data.stats
    assert stats["documents"] == N_DOCS and stats["docs_skipped"] == 0 and stats["documents_used"] == N_DOCS
    assert stats["instances"] == len(labels) and abs(stats["is_next_fraction"] - labels.count(0) / len(labels)) < 1e-3
    assert stats["sentences"] == sum(len(d) for d in make_corpus())
    batch = DataCollatorForPreTraining(data.tokenizer, seed=0)([data.train_dataset[i] for i in range(8)])
    assert {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"} <= set(batch)


def test_validation_percentage_holds_out_whole_documents(tmp_path, corpus_file, marker_tokenizer):
    data = prepare_marked(tmp_path, corpus_file, marker_tokenizer, validation_split_percentage=10)
    tracer = Tracer(data.tokenizer, dict(enumerate(make_corpus())))

    def documents(dataset):
        found = set()
        for row in dataset:
            for part in split_instance(row, data.tokenizer, 64):
                where = tracer.locate(part)
                if where:
                    found.add(where[0])
        return found

    train_docs, eval_docs = documents(data.train_dataset), documents(data.eval_dataset)
    assert len(eval_docs) == round(0.1 * N_DOCS) and not train_docs & eval_docs  # NotNext Bs included
    assert data.stats["eval_documents_used"] == round(0.1 * N_DOCS)
    check_provenance(data.eval_dataset, data.tokenizer, tracer, 64)
    limited = prepare_marked(
        tmp_path, corpus_file, marker_tokenizer, validation_split_percentage=10, max_eval_samples=7
    )
    assert len(limited.eval_dataset) == 7


def test_validation_file(tmp_path, corpus_file, marker_tokenizer):
    held_out = make_corpus(n_docs=20, seed=9, first_doc=500)
    path = write_corpus(tmp_path / "valid.txt", held_out)
    data = prepare_marked(tmp_path, corpus_file, marker_tokenizer, validation_file=path)
    tracer = Tracer(data.tokenizer, {500 + i: doc for i, doc in enumerate(held_out)})
    check_provenance(data.eval_dataset, data.tokenizer, tracer, 64)
    assert data.stats["documents"] == N_DOCS  # nothing held out of the training file


def test_short_seq_prob_makes_shorter_sequences(tmp_path, corpus_file, marker_tokenizer):
    common = dict(
        train_file=[corpus_file], tokenizer_name=marker_tokenizer, max_seq_length=128, validation_split_percentage=0
    )
    full = prepare(tmp_path, short_seq_prob=0.0, **common).stats
    short = prepare(tmp_path, short_seq_prob=0.5, **common).stats
    assert full["mean_seq_length"] > 90 and short["mean_seq_length"] < 0.85 * full["mean_seq_length"]
    assert short["cache"]["documents"] == "hit"  # only the pairing was redone


def rows(dataset):
    return [tuple(map(tuple, (r["input_ids"], r["token_type_ids"]))) + (r["next_sentence_label"],) for r in dataset]


def test_same_seed_same_data_any_num_proc_other_seed_other_data(tmp_path, corpus_file):
    common = dict(train_file=[corpus_file], max_seq_length=64, vocab_size=300, min_frequency=1)
    one = prepare(tmp_path / "a", **common)
    again = prepare(tmp_path / "b", **common)  # a separate cache: built again from scratch
    two_workers = prepare(tmp_path / "c", preprocessing_num_workers=2, **common)
    other_seed = prepare(tmp_path / "a", seed=1, **common)
    assert again.stats["cache"]["pairs"] == "built" and two_workers.stats["cache"]["pairs"] == "built"
    assert set(FILLER) <= set(one.tokenizer.get_vocab())  # a real vocabulary, not just characters
    assert one.tokenizer.get_vocab() == again.tokenizer.get_vocab()  # trained twice, the same
    assert rows(one.train_dataset) == rows(again.train_dataset) == rows(two_workers.train_dataset)
    assert rows(one.eval_dataset) == rows(two_workers.eval_dataset)
    assert one.train_dataset["example_id"] == two_workers.train_dataset["example_id"]
    assert rows(one.train_dataset) != rows(other_seed.train_dataset)
    assert other_seed.stats["cache"] == {"tokenizer": "hit", "documents": "hit", "pairs": "built"}


def test_mlm_only_examples_are_the_same_for_any_num_proc(tmp_path, corpus_file):
    """Packed MLM-only examples span documents: with 2 processes the shard boundary (document 114 of 228) falls
    inside a packing group, which must still be packed whole, as one process packs it."""
    common = dict(
        train_file=[corpus_file], max_seq_length=64, vocab_size=300, min_frequency=1, next_sentence_prediction=False
    )
    one = prepare(tmp_path / "a", **common)
    two_workers = prepare(tmp_path / "b", preprocessing_num_workers=2, **common)
    assert len(one.train_dataset) > 100
    assert one.train_dataset.to_dict() == two_workers.train_dataset.to_dict()  # ids, segments and example ids
    assert one.eval_dataset.to_dict() == two_workers.eval_dataset.to_dict()


def test_cache_is_reused_and_invalidated_by_changed_inputs(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", make_corpus(n_docs=60))
    common = dict(train_file=[corpus], max_seq_length=64, vocab_size=300, min_frequency=1)
    first = prepare(tmp_path / "cache", **common)
    assert first.stats["cache"] == {"tokenizer": "built", "documents": "built", "pairs": "built"}
    second = prepare(tmp_path / "cache", **common)
    assert second.stats["cache"] == {"tokenizer": "hit", "documents": "hit", "pairs": "hit"}
    assert rows(second.train_dataset) == rows(first.train_dataset)
    assert second.stats["seconds"] < first.stats["seconds"]

    different_length = prepare(tmp_path / "cache", **{**common, "max_seq_length": 48})
    assert different_length.stats["cache"] == {"tokenizer": "hit", "documents": "built", "pairs": "built"}

    write_corpus(tmp_path / "corpus.txt", make_corpus(n_docs=61))  # the file changes: everything is rebuilt
    changed = prepare(tmp_path / "cache", **common)
    assert changed.stats["cache"] == {"tokenizer": "built", "documents": "built", "pairs": "built"}
    assert changed.stats["documents"] == 61

    rebuilt = prepare(tmp_path / "cache", overwrite_cache=True, **common)
    assert rebuilt.stats["cache"] == {"tokenizer": "built", "documents": "built", "pairs": "built"}
    assert rows(rebuilt.train_dataset) == rows(changed.train_dataset)


def test_a_failed_run_leaves_the_cache_as_it_was(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", make_corpus(n_docs=40))
    cache = tmp_path / "cache"
    prepare(cache, train_file=[corpus], max_seq_length=64, vocab_size=300, min_frequency=1)
    before = sorted(os.listdir(cache))
    bad = tmp_path / "bad.txt"
    bad.write_bytes("d1 s1 caf\xe9 .\n".encode("latin-1"))
    with pytest.raises(UserError, match="bad.txt is not UTF-8"):
        prepare(cache, train_file=[corpus, str(bad)], max_seq_length=64, vocab_size=300, min_frequency=1)
    assert sorted(os.listdir(cache)) == before  # no half-written entry, no work directory left behind
    again = prepare(cache, train_file=[corpus], max_seq_length=64, vocab_size=300, min_frequency=1)
    assert again.stats["cache"] == {"tokenizer": "hit", "documents": "hit", "pairs": "hit"}


def test_trained_tokenizer_jsonl_and_sentence_splitting(tmp_path):
    rng = random.Random(0)
    with open(tmp_path / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in range(80):
            text = " ".join(
                f"Sentence {s} of Mr. Doc{d} has {rng.choice(FILLER)} words, e.g. {rng.choice(FILLER)}."
                for s in range(rng.randint(3, 12))
            )
            f.write(json.dumps({"id": d, "text": text}) + "\n")
    data = prepare(
        tmp_path / "cache",
        train_file=[str(tmp_path / "docs.jsonl")],
        vocab_size=400,
        min_frequency=1,
        max_seq_length=64,
    )
    stats = data.stats
    assert stats["documents"] == 80 and stats["cache"]["tokenizer"] == "built"
    assert {"sentence", "words", "doc"} <= set(data.tokenizer.get_vocab())
    assert stats["sentences"] == sum(
        1 for line in open(tmp_path / "docs.jsonl") for _ in json.loads(line)["text"].split(" Sentence ")
    ), "one sentence per 'Sentence'"
    # The trained tokenizer is a BERT tokenizer that AutoTokenizer reloads from its saved form.
    data.tokenizer.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded("a b", "c")["token_type_ids"] == data.tokenizer("a b", "c")["token_type_ids"]
    assert reloaded.get_vocab() == data.tokenizer.get_vocab()
    for row in data.train_dataset.select(range(50)):
        split_instance(row, data.tokenizer, 64)


def test_demo_corpus_is_the_default(tmp_path):
    data = prepare(tmp_path, max_seq_length=128)
    assert data.stats["documents"] > 100 and data.stats["instances"] > 500 and len(data.eval_dataset) > 10
    assert abs(data.stats["is_next_fraction"] - 0.5) < 0.06
    assert any(name.startswith("demo") for name in os.listdir(tmp_path))


def test_saved_dataset_and_load_dataset_sources(tmp_path, marker_tokenizer, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    documents = make_corpus(n_docs=50)
    records = {"body": [" ".join(s.capitalize() for s in doc) for doc in documents]}
    DatasetDict(
        {"train": Dataset.from_dict(records), "validation": Dataset.from_dict({"body": records["body"][:5]})}
    ).save_to_disk(str(tmp_path / "saved"))
    data = prepare(
        tmp_path / "cache",
        dataset_name=str(tmp_path / "saved"),
        dataset_text_column="body",
        tokenizer_name=marker_tokenizer,
        max_seq_length=64,
    )
    assert data.stats["documents"] == 50 and data.stats["eval_sentences"] == sum(len(d) for d in documents[:5])
    tracer = Tracer(data.tokenizer, dict(enumerate(documents)))
    check_provenance(data.train_dataset, data.tokenizer, tracer, 64)

    os.makedirs(tmp_path / "hubstyle")
    with open(tmp_path / "hubstyle" / "train.jsonl", "w") as f:
        for text in records["body"]:
            f.write(json.dumps({"text": text}) + "\n")
    data = prepare(
        tmp_path / "cache", dataset_name=str(tmp_path / "hubstyle"), tokenizer_name=marker_tokenizer, max_seq_length=64
    )
    assert data.stats["documents"] == 50 and data.stats["documents_used"] == 50 - 2  # 5% held out, 2 at least
    assert data.eval_dataset is not None and data.stats["eval_documents_used"] == 2

    Dataset.from_dict({"body": records["body"][-4:]}).save_to_disk(str(tmp_path / "held_out"))
    data = prepare(
        tmp_path / "cache",
        train_file=[str(tmp_path / "saved")],
        validation_file=str(tmp_path / "held_out"),
        dataset_text_column="body",
        tokenizer_name=marker_tokenizer,
        max_seq_length=64,
    )
    assert data.stats["eval_documents_used"] == 4 and data.stats["documents_used"] == 50

    with pytest.raises(UserError, match="no column 'missing'"):
        prepare(
            tmp_path / "cache",
            dataset_name=str(tmp_path / "saved"),
            dataset_text_column="missing",
            tokenizer_name=marker_tokenizer,
        )


def test_streaming(tmp_path, corpus_file, marker_tokenizer):
    data = prepare_marked(
        tmp_path,
        corpus_file,
        marker_tokenizer,
        streaming=True,
        validation_split_percentage=10,
        streaming_buffer_size=50,
    )
    assert isinstance(data.train_dataset, IterableDataset) and data.stats["streaming"]
    tracer = Tracer(data.tokenizer, dict(enumerate(make_corpus())))
    first = list(data.train_dataset.take(600))
    assert first == list(data.train_dataset.take(600))  # deterministic
    check_provenance(first, data.tokenizer, tracer, 64)
    assert abs(sum(r["next_sentence_label"] == 0 for r in first) / 600 - 0.5) < 0.07
    train_docs = {
        tracer.locate(split_instance(r, data.tokenizer, 64)[0])[0]
        for r in first
        if tracer.locate(split_instance(r, data.tokenizer, 64)[0])
    }
    eval_docs = {
        tracer.locate(split_instance(r, data.tokenizer, 64)[0])[0]
        for r in data.eval_dataset
        if tracer.locate(split_instance(r, data.tokenizer, 64)[0])
    }
    assert eval_docs and not train_docs & eval_docs
    batch = DataCollatorForPreTraining(data.tokenizer, seed=0)(first[:4])
    assert batch["input_ids"].shape[0] == 4


def test_a_streamed_not_next_b_comes_from_another_document_of_its_block(tmp_path, corpus_file, marker_tokenizer):
    """The streaming path pairs each block of --streaming_buffer_size documents within itself (nothing held out
    here, so block k is documents 50k .. 50k + 49 of the file): a NotNext B is another document of A's block, an
    IsNext B is A's own document, and the labels are a fair coin."""
    data = prepare_marked(
        tmp_path, corpus_file, marker_tokenizer, streaming=True, validation_split_percentage=0, streaming_buffer_size=50
    )
    tracer = Tracer(data.tokenizer, dict(enumerate(make_corpus())))
    rows = list(data.train_dataset)
    assert len(rows) > 900
    located = 0
    for row in rows:
        a, b = split_instance(row, data.tokenizer, 64)
        where_a, where_b = tracer.locate(a), tracer.locate(b)
        if where_a is None or where_b is None:
            continue
        located += 1
        if row["next_sentence_label"] == 1:
            assert where_a[0] != where_b[0] and where_a[0] // 50 == where_b[0] // 50, (where_a, where_b)
        else:
            assert where_a[0] == where_b[0]
    assert located > 0.95 * len(rows)
    assert abs(sum(r["next_sentence_label"] == 0 for r in rows) / len(rows) - 0.5) < 0.04


# ---------------------------------------------------------------------------------------------------------------
# What a user can get wrong: one clear message
# ---------------------------------------------------------------------------------------------------------------


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n\t\n")
    with pytest.raises(UserError, match=r"the corpus is empty: no text in 1 file\(s\) \(empty.txt\)"):
        prepare(tmp_path / "cache", train_file=[str(tmp_path / "empty.txt")])


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(UserError, match="train file not found: .*nope.txt"):
        prepare(tmp_path, train_file=[str(tmp_path / "nope.txt")])
    with pytest.raises(UserError, match="matches no files"):
        prepare(tmp_path, train_file=[str(tmp_path / "*.txt")])
    with pytest.raises(UserError, match="validation file not found"):
        prepare(
            tmp_path,
            train_file=[str(write_corpus(tmp_path / "a.txt", make_corpus(5)))],
            validation_file=str(tmp_path / "v.txt"),
        )


def test_corpus_too_small_says_what_it_found_and_needs(tmp_path, marker_tokenizer):
    one_doc = write_corpus(tmp_path / "one.txt", make_corpus(n_docs=1))
    with pytest.raises(
        UserError,
        match=r"too small to make NSP pairs: .* gave 1 document\(s\) with \d+ sentence\(s\)"
        r".*need at least 2 documents",
    ):
        prepare(tmp_path / "cache", train_file=[one_doc], tokenizer_name=marker_tokenizer)
    single_sentences = write_corpus(tmp_path / "single.txt", make_corpus(n_docs=5, sentences=(1, 1)))
    with pytest.raises(UserError, match=r"5 document\(s\) with 5 sentence\(s\), 0 of them with 2 or more"):
        prepare(
            tmp_path / "cache",
            train_file=[single_sentences],
            tokenizer_name=marker_tokenizer,
            validation_split_percentage=0,
        )


def test_jsonl_record_without_text(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "A. B."}\n{"content": "C. D."}\n')
    with pytest.raises(UserError, match=r"a.jsonl:2: record has no 'text' field \(fields: content\)"):
        prepare(tmp_path / "cache", train_file=[str(tmp_path / "a.jsonl")])


def test_bad_arguments(tmp_path):
    for bad in (
        dict(max_seq_length=4),
        dict(mlm_probability=0),
        dict(short_seq_prob=2),
        dict(dupe_factor=0),
        dict(validation_split_percentage=100),
        dict(train_file=["a"], dataset_name="b"),
    ):
        with pytest.raises(UserError):
            prepare(tmp_path, **bad)


def test_arguments_parse_from_the_command_line():
    (args,) = parse_args(
        [DataArguments],
        ["--train_file", "a.txt", "b/*.jsonl", "--max_seq_length", "64", "--whole_word_mask", "--lowercase", "false"],
    )
    assert args.train_file == ["a.txt", "b/*.jsonl"] and args.max_seq_length == 64
    assert args.whole_word_mask and not args.lowercase


def test_cli_reports_one_line_and_exit_status_2(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Un caf\xe9.\nDeux.\n\nTrois.\nQuatre.\n".encode("latin-1"))
    code = (
        "import sys\n"
        "from minibert.cli import run_cli\n"
        "from pretrain.data import prepare_pretraining_data\n"
        "def main(argv):\n"
        f"    prepare_pretraining_data(train_file=[{str(latin)!r}], data_cache_dir={str(tmp_path)!r}, seed=0)\n"
        "sys.exit(run_cli(main))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [
        f"error: {latin} is not UTF-8 text (byte 0xe9 near line 1); convert it first, e.g. "
        "`iconv -f latin1 -t utf-8 latin.txt`"
    ]
