"""What the demo reports it learnt (pretrain/demo.py), checked against independent counts; the shared text rules."""

from collections import Counter

import pytest

from minibert.text import docstring_prose, split_sentences
from pretrain.demo import STOPWORDS, heldout_prompts, unigram_baseline


def test_docstring_prose_keeps_running_text_only():
    doc = """Return the frobnicated value of *x*, see :func:`os.path.join` and <https://example.org>.

    It is used by the ``frob`` module. Another sentence follows here!

    >>> frob(1)
    2

    Args:
        x: never part of the prose.
    """
    assert docstring_prose(doc) == [
        "Return the frobnicated value of x, see os.path.join and.",
        "It is used by the frob module.",
        "Another sentence follows here!",
    ]


def test_one_sentence_splitter():
    assert split_sentences("Dr. Smith came. He saw e.g. this! Then? Done.") == [
        "Dr. Smith came.", "He saw e.g. this!", "Then?", "Done."
    ]  # fmt: skip


def test_the_unigram_baseline_is_the_share_of_the_most_frequent_training_token():
    special = {0, 1, 2}
    train = [[1, 5, 5, 6, 2], [1, 5, 7, 2]]
    held_out = [[1, 5, 6, 6, 6, 2], [1, 7, 2, 0, 0]]
    top, accuracy = unigram_baseline(train, held_out, special)
    counts = Counter(t for ids in train for t in ids if t not in special)
    assert top == counts.most_common(1)[0][0] == 5
    real = [t for ids in held_out for t in ids if t not in special]
    assert accuracy == pytest.approx(real.count(5) / len(real))


class _Tokenizer:
    """Word-level: enough of a tokenizer for `heldout_prompts`."""

    sep_token_id, cls_token_id, mask_token = 1, 0, "[MASK]"

    def __init__(self, words):
        self.vocab = ["[CLS]", "[SEP]", *words]

    def convert_ids_to_tokens(self, ids):
        return [self.vocab[i] for i in ids]

    def decode(self, ids):
        return " ".join(self.vocab[i] for i in ids)


def test_heldout_prompts_mask_one_known_content_word_of_held_out_text():
    words = ["the", "parser", "reads", "each", "token", "from", "stream", "and", "returns", "a", "node", "##s", "."]
    tok = _Tokenizer(words)
    ids = {w: i + 2 for i, w in enumerate(words)}
    sentence = [ids[w] for w in "the parser reads each token from the stream and returns a node ##s .".split()]
    held_out = [[tok.cls_token_id, *sentence, tok.sep_token_id]]
    counts = Counter({i: 10 for i in ids.values()})
    counts[ids["stream"]] = 1  # too rare in training to be asked about
    prompts = heldout_prompts(held_out, tok, counts, n=10)
    asked = {word for _, word in prompts}
    assert asked == {"parser", "reads", "each", "token", "returns"} - STOPWORDS  # not "node" (split), "stream" (rare)
    for prompt, word in prompts:
        assert prompt.count("[MASK]") == 1
        assert prompt.replace("[MASK]", word) == "the parser reads each token from the stream and returns a node ##s."
