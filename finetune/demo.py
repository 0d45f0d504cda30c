"""The built-in demo: a real classification task made from text that ships with Python, and a base model when there
is no pretrained one.

The task: which part of Python's language reference does a sentence come from? `pydoc_data.topics` (the text behind
`help("for")`) holds the reference's topics; their prose sentences are labelled by the part of the reference their
topic belongs to (`TOPIC_GROUPS`: statements, expressions, built-in types, the debugger). A sentence that occurs in
topics of two parts is left out, so every label is unambiguous. A model has to learn which words and phrasings go
with which part ("the loop", "the target list" vs "the operand" vs "the method returns" vs "print the stack"),
and sentences, not words, are split between train / validation / test, so every test sentence is new.
"""

from __future__ import annotations

import csv
import os
import random

from minibert.text import prose, sections, split_sentences

# The part of the language reference each pydoc topic belongs to (topics of other parts are not used).
TOPIC_GROUPS = {
    "statements": [
        "assert",
        "assignment",
        "async",
        "augassign",
        "break",
        "class",
        "compound",
        "continue",
        "del",
        "else",
        "for",
        "function",
        "global",
        "if",
        "import",
        "nonlocal",
        "pass",
        "raise",
        "return",
        "try",
        "while",
        "with",
        "yield",
    ],
    "expressions": [
        "atom-identifiers",
        "atom-literals",
        "attribute-references",
        "await",
        "binary",
        "bitwise",
        "booleans",
        "calls",
        "comparisons",
        "conversions",
        "exprlists",
        "floating",
        "formatstrings",
        "identifiers",
        "imaginary",
        "in",
        "integers",
        "lambda",
        "numbers",
        "operator-summary",
        "power",
        "shifting",
        "slicings",
        "strings",
        "subscriptions",
        "unary",
    ],
    "built-in types": [
        "dict",
        "lists",
        "numeric-types",
        "sequence-types",
        "string-methods",
        "types",
        "typesfunctions",
        "typesmapping",
        "typesmethods",
        "typesseq",
        "typesseq-mutable",
    ],
    "debugger": ["debugger"],
}
DEMO_EPOCHS = 10.0  # ~1,000 training sentences: a tiny model needs more passes than the usual 3
_SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def topic_sentences(text: str, min_words: int = 5, max_words: int = 50) -> set[str]:
    """Prose sentences of one pydoc topic, cleaned as the pretraining demo's corpus is (`minibert.text.prose`:
    code, grammar, interactive sessions and tables left out), each a capitalised statement of 5-50 words."""
    sentences = set()
    for _title, paragraphs in sections(text):
        for paragraph in prose(paragraphs):
            for sentence in split_sentences(paragraph):
                if min_words <= len(sentence.split()) <= max_words and sentence.endswith(".") and sentence[0].isupper():
                    sentences.add(sentence)
    return sentences


def labelled_sentences() -> list[tuple[str, str]]:
    """(sentence, part of the reference), sorted; sentences found in two parts are left out."""
    from pydoc_data.topics import topics

    parts: dict[str, set[str]] = {}
    for label, keys in TOPIC_GROUPS.items():
        for key in keys:
            for sentence in topic_sentences(topics.get(key, "")):
                parts.setdefault(sentence, set()).add(label)
    return sorted((sentence, next(iter(labels))) for sentence, labels in parts.items() if len(labels) == 1)


def make_demo_splits(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """Rows {"sentence", "label"} per split, a seeded shuffle cut 80 / 10 / 10."""
    rows = [{"sentence": sentence, "label": label} for sentence, label in labelled_sentences()]
    random.Random(seed).shuffle(rows)
    n_train = int(len(rows) * _SPLIT_FRACTIONS["train"])
    n_validation = int(len(rows) * _SPLIT_FRACTIONS["validation"])
    return {
        "train": rows[:n_train],
        "validation": rows[n_train : n_train + n_validation],
        "test": rows[n_train + n_validation :],
    }


def write_demo_data(directory: str, seed: int = 0) -> dict[str, str]:
    """Write train.csv / validation.csv / test.csv into `directory`; returns their paths by split."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, rows in make_demo_splits(seed).items():
        path = os.path.join(directory, f"{name}.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["sentence", "label"])
            writer.writeheader()
            writer.writerows(rows)
        paths[name] = path
    return paths


def fresh_model(
    texts: list[str], model_cls, preset: str = "tiny", vocab_size: int = 4096, seed: int = 0, **config_overrides
):
    """A randomly initialised `model_cls` of the given preset (plus `config_overrides`, e.g. the labels) and a
    WordPiece tokenizer trained on `texts` with pretraining's deterministic trainer (the same texts give the same
    vocabulary on every rank and in every run)."""
    import torch

    from minibert import MiniBertConfig
    from pretrain.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, show_progress=False)
    config = MiniBertConfig.from_preset(
        preset, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **config_overrides
    )
    torch.manual_seed(seed)
    return model_cls(config), tokenizer
