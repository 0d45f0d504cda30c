"""The trained WordPiece tokenizer is a BERT tokenizer anywhere; documents become segments of ids."""

import json
import os
import random

import pytest
from transformers import AutoTokenizer, BertTokenizer

from minibert.cli import UserError
from pretrain.tokenizer import (
    DocumentTokenizer,
    load_tokenizer,
    split_long_line,
    tokenizer_fingerprint,
    train_tokenizer,
)

WORDS = [
    "the",
    "model",
    "reads",
    "text",
    "and",
    "learns",
    "which",
    "words",
    "follow",
    "others",
    "in",
    "long",
    "documents",
    "about",
    "tokenization",
]


def sentences(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))).capitalize() + "." for _ in range(n)]


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(sentences(500), vocab_size=200, min_frequency=1, show_progress=False)


def test_trained_tokenizer_saves_and_reloads_as_bert(trained, tmp_path):
    assert trained.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trained.save_pretrained(tmp_path)
    with open(os.path.join(tmp_path, "tokenizer_config.json")) as f:
        assert json.load(f)["tokenizer_class"] in ("BertTokenizer", "BertTokenizerFast")
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(reloaded, BertTokenizer) and reloaded.is_fast
    encoded = reloaded("The model reads", "Tokenization follows")
    tokens = reloaded.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    first_sep = tokens.index("[SEP]")
    assert encoded["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
    assert reloaded.decode(encoded["input_ids"], skip_special_tokens=True) == "the model reads tokenization follows"
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(trained)


def test_training_is_deterministic_and_learns_words(trained):
    assert {"model", "tokenization", "documents"} <= set(trained.get_vocab())
    again = train_tokenizer(lambda: iter(sentences(500)), vocab_size=200, min_frequency=1, show_progress=False)
    assert again.get_vocab() == trained.get_vocab()
    with pytest.raises(TypeError, match="reads `texts` twice"):
        train_tokenizer(iter(sentences(10)), vocab_size=200, show_progress=False)


def test_wordpiece_continuations_and_unknown_characters(trained):
    tokens = trained.tokenize("tokenizationtokenization")
    assert len(tokens) > 1 and all(t.startswith("##") for t in tokens[1:])
    assert trained.tokenize("模") == ["[UNK]"]


def test_lowercase_option():
    cased = train_tokenizer(sentences(300), vocab_size=200, lowercase=False, min_frequency=1, show_progress=False)
    assert "The" in cased.get_vocab()
    assert cased.tokenize("The")[0] == "The"


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "nowhere"))


def test_split_long_line_keeps_words_whole():
    # ids 10.. are words, 100.. are `##` continuations.
    is_continuation = [i >= 100 for i in range(200)]
    line = []
    for w in range(40):
        line += [10 + w % 50, *(100 + k for k in range(w % 3))]
    pieces = split_long_line(line, max_len=20, piece_len=10, is_continuation=is_continuation)
    assert [t for p in pieces for t in p] == line
    assert all(1 <= len(p) <= 10 for p in pieces)
    assert all(not is_continuation[p[0]] for p in pieces)
    assert split_long_line(line[:20], 20, 10, is_continuation) == [line[:20]]


def test_document_tokenizer_cuts_overlong_lines_and_drops_empty_documents(trained):
    tokenize = DocumentTokenizer(trained, max_seq_length=16)
    long_line = " ".join(["the model reads text"] * 10)
    out = tokenize(
        {"text": ["The model.\nReads text.", "\u200b", long_line + "\nShort one."], "presplit": [True, True, True]}
    )
    assert out["num_lines"] == [2, 2]  # the document of only a zero-width space is gone
    assert out["lines_split"] == [0, 1]
    first, second = out["segments"]
    assert [trained.decode(s) for s in first] == ["the model.", "reads text."]
    assert all(len(s) <= (16 - 3) // 2 for s in second[:-1]) and len(second) > 3
    assert out["num_bytes"][1] == len((long_line + "\nShort one.").encode())
    # Not presplit: the sentence splitter runs.
    assert tokenize({"text": ["The model reads. Text follows."]})["num_lines"] == [2]


def test_document_tokenizer_table_is_its_output_as_the_cache_stores_it(trained):
    """What the cached map writes (`table`, built from flat arrays) holds exactly the lists `__call__` returns, in
    the cache's types."""
    from pretrain.data import DOCUMENT_FEATURES

    tokenize = DocumentTokenizer(trained, max_seq_length=16)
    batch = {"text": ["The model.\nReads text.", "", " ".join(["the model reads text"] * 10)], "presplit": [True] * 3}
    table = tokenize.table(batch)
    assert table.to_pydict() == tokenize(batch)
    assert table.schema == DOCUMENT_FEATURES.arrow_schema
    assert tokenize.table({"text": [""], "presplit": [True]}).num_rows == 0
