"""The built-in demo: a real two-class task made from text that ships with Python, and a base model when there is
no pretrained one.

The task ("original" vs "shuffled") asks whether a sentence of Python's own documentation (`pydoc_data.topics`) is
as written or has had its words put in a random order. Casing and the final full stop are kept where a sentence
has them, so only word order tells the classes apart: a bag of words cannot solve it, a model of syntax can, which
is what masked-language-model pretraining teaches. Sentences, not rows, are split between train / validation /
test, so a test sentence was never seen in training in either form.
"""

from __future__ import annotations

import csv
import os
import random
import re

ORIGINAL, SHUFFLED = "original", "shuffled"
_SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN_SENTENCE = re.compile(r"[A-Za-z0-9 ,;:'\"\-.()]+")


def demo_sentences(min_words: int = 6, max_words: int = 40) -> list[str]:
    """Prose sentences of the pydoc topics (code examples and tables skipped), sorted and de-duplicated."""
    from pydoc_data.topics import topics

    sentences = set()
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            if ">>>" in paragraph:
                continue  # interactive examples
            flat = re.sub(r"[*`]", "", " ".join(paragraph.split()))  # reST emphasis marks
            for sentence in _SENTENCE_END.split(flat):
                sentence = sentence.strip()
                n_words = len(sentence.split())
                if min_words <= n_words <= max_words and sentence.endswith(".") and _PLAIN_SENTENCE.fullmatch(sentence):
                    sentences.add(sentence)
    return sorted(sentences)


def shuffle_words(sentence: str, rng: random.Random) -> str:
    """The sentence's words in a new random order, re-cased and re-punctuated like a sentence."""
    words = sentence[:-1].split() if sentence.endswith(".") else sentence.split()
    if len(set(words)) < 2:
        raise ValueError(f"cannot shuffle a sentence with fewer than two distinct words: {sentence!r}")
    first_was_capitalised = words[0][:1].isupper() and words[0][1:] == words[0][1:].lower()
    order = list(range(len(words)))
    while [words[i] for i in order] == words:
        rng.shuffle(order)
    # The old first word loses its capital, the new one gains it: casing must not give the answer away.
    shuffled = [words[i].lower() if i == 0 and first_was_capitalised else words[i] for i in order]
    if first_was_capitalised:
        shuffled[0] = shuffled[0][:1].upper() + shuffled[0][1:]
    if sentence.endswith("."):  # no "word,." at the end either
        shuffled[-1] = shuffled[-1].rstrip(",;:")
    return " ".join(shuffled) + ("." if sentence.endswith(".") else "")


def make_demo_splits(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """Rows {"sentence", "label"} per split: each sentence once as written and once shuffled, in random order."""
    rng = random.Random(seed)
    sentences = demo_sentences()
    rng.shuffle(sentences)
    n = len(sentences)
    n_train = int(n * _SPLIT_FRACTIONS["train"])
    n_validation = int(n * _SPLIT_FRACTIONS["validation"])
    parts = {
        "train": sentences[:n_train],
        "validation": sentences[n_train : n_train + n_validation],
        "test": sentences[n_train + n_validation :],
    }
    splits = {}
    for name, part in parts.items():
        rows = []
        for sentence in part:
            rows.append({"sentence": sentence, "label": ORIGINAL})
            rows.append({"sentence": shuffle_words(sentence, rng), "label": SHUFFLED})
        rng.shuffle(rows)
        splits[name] = rows
    return splits


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


def fresh_model(texts: list[str], model_cls, preset: str = "tiny", vocab_size: int = 4096, seed: int = 0):
    """A randomly initialised `model_cls` of the given preset and a WordPiece tokenizer trained on `texts` (with
    pretraining's deterministic trainer: the same texts give the same vocabulary on every rank and every run)."""
    import torch

    from minibert import MiniBertConfig
    from pretrain.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, show_progress=False)
    config = MiniBertConfig.from_preset(preset, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return model_cls(config), tokenizer
