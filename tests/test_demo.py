"""What the demo reports it learnt (pretrain/demo.py), checked against independent counts; the shared text rules."""

from collections import Counter

import pytest

from minibert.text import docstring_prose, split_sentences
from pretrain.demo import (
    GAIN_MEASURED,
    STOPWORDS,
    heldout_prompts,
    pretraining_gain,
    report_gain,
    text_segments,
    unigram_baseline,
    word_order_task,
)


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


def test_text_segments_and_the_word_order_task():
    """Segments are the text between [CLS] / [SEP]; each task row holds a sentence's own words, in order or not."""
    tok = _Tokenizer("a b c d e f g h i j".split())
    tok.pad_token_id = 99
    ids = [[0, *range(2, 10), 1, *range(3, 12), 1]]
    assert text_segments(ids, tok, min_tokens=8) == ["a b c d e f g h", "b c d e f g h i j"]
    sentences = [f"w{i} x{i} y{i} z{i} the end" for i in range(200)]
    task = word_order_task(sentences[:150], sentences[150:], seed=0)
    assert [len(task["train"]), len(task["test"])] == [150, 50]
    for split, source in (("train", sentences[:150]), ("test", sentences[150:])):
        for row, sentence in zip(task[split], source):
            assert sorted(row["sentence"].split()) == sorted(sentence.split())
            assert (row["sentence"] == sentence) == (row["label"] == "original")
    assert 60 < sum(r["label"] == "original" for r in task["train"]) < 90
    # the benchmark's variant: the final period stays in place, the words before it are still shuffled
    ended = [f"{s} ." for s in sentences]
    kept = word_order_task(ended[:150], ended[150:], seed=0, keep_final_punctuation=True)["train"]
    assert all(row["sentence"].endswith(" .") for row in kept)
    assert all((row["sentence"] in ended) == (row["label"] == "original") for row in kept)
    assert 60 < sum(r["label"] == "original" for r in kept) < 90


def test_the_gain_sentences_are_held_out_text_split_apart():
    """Training and test sentences of the gain task both come from the held-out text, never overlap, cover it, and a
    split is seeded; at most two thirds (and GAIN_TRAIN_ROWS) go to training."""
    from pretrain.demo import GAIN_TRAIN_ROWS, gain_sentences

    held_out = [f"sentence number {i} ." for i in range(90)]
    train, test = gain_sentences(held_out, seed=0)
    assert (len(train), len(test)) == (60, 30)
    assert sorted(train + test) == sorted(held_out)
    assert gain_sentences(held_out, seed=0) == (train, test) and gain_sentences(held_out, seed=1) != (train, test)
    many = [f"s {i}" for i in range(3 * GAIN_TRAIN_ROWS)]
    assert len(gain_sentences(many)[0]) == GAIN_TRAIN_ROWS


def test_the_gain_comparison_fine_tunes_both_arms_on_the_same_budget(tmp_path, capsys, monkeypatch):
    """Both arms through finetune.train.finetune: the pretrained weights vs the same config from random weights, the
    same rows, steps and seed in each split, each split its own; chance is the test share of the training rows' most
    frequent class; nothing stays behind (the comparison runs in a temporary folder) and the checkpoint is unchanged."""
    from collections import Counter

    import torch
    from conftest import snapshot

    import finetune.train
    from finetune.demo import make_demo_splits
    from minibert import MiniBertConfig, MiniBertForPreTraining
    from pretrain.demo import gain_sentences
    from pretrain.tokenizer import train_tokenizer

    sentences = [r["sentence"] for r in make_demo_splits(seed=0)["train"]][:75]
    tokenizer = train_tokenizer(sentences, vocab_size=500, show_progress=False)
    torch.manual_seed(0)
    config = MiniBertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=37, max_position_embeddings=128)  # fmt: skip
    MiniBertForPreTraining(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    before = snapshot(tmp_path / "model")
    calls, real = [], finetune.train.finetune

    def recorded(**options):
        files = [open(options[name], encoding="utf-8").read() for name in ("train_file", "test_file")]
        calls.append(
            (options["from_scratch"], files, options["seed"], options["num_train_epochs"], options["learning_rate"])
        )
        return real(**options)

    monkeypatch.setattr(finetune.train, "finetune", recorded)
    figures = pretraining_gain(str(tmp_path / "model"), sentences, repeats=2, epochs=1)
    assert snapshot(tmp_path / "model") == before
    assert (figures["gain_train_rows"], figures["gain_test_rows"], figures["gain_repeats"]) == (50, 25, 2)
    assert [c[0] for c in calls] == [False, True, False, True]  # pretrained, then random weights, in each split
    for repeat in range(2):
        pretrained, scratch = calls[2 * repeat], calls[2 * repeat + 1]
        assert pretrained[1:] == scratch[1:] and pretrained[2] == repeat  # same rows, seed, epochs, learning rate
        task = word_order_task(*gain_sentences(sentences, repeat), seed=repeat)
        top = Counter(r["label"] for r in task["train"]).most_common(1)[0][0]
        assert figures["gain_chance_majority_runs"][repeat] == sum(r["label"] == top for r in task["test"]) / 25
    assert calls[0][1] != calls[2][1]  # each split its own rows
    for arm in ("pretrained", "scratch"):
        runs = figures[f"gain_{arm}_accuracy_runs"]
        assert len(runs) == 2 and all(0 <= x <= 1 for x in runs)
        assert figures[f"gain_{arm}_accuracy"] == sum(runs) / 2
    report_gain(figures)
    out = capsys.readouterr().out
    assert "this pretrained model" in out and "random weights" in out and "chance" in out and "2 splits" in out

    def runs(pretrained, scratch):
        return {"gain_pretrained_accuracy_runs": pretrained, "gain_scratch_accuracy_runs": scratch,
                "gain_pretrained_accuracy": sum(pretrained) / 2, "gain_scratch_accuracy": sum(scratch) / 2}  # fmt: skip

    report_gain({**figures, **runs([0.8, 0.8], [0.5, 0.5])})
    assert "pretraining added +0.300" in capsys.readouterr().out
    report_gain({**figures, **runs([0.9, 0.4], [0.5, 0.5])})  # a mean gain that one split contradicts
    assert "no clear gain (+0.150; pretrained ahead in 1 of 2 splits)" in capsys.readouterr().out
    report_gain({**figures, **runs([0.5, 0.5], [0.5, 0.5])})
    assert "no clear gain" in capsys.readouterr().out
    report_gain({**figures, **runs([0.5, 0.5], [0.7, 0.7])})
    out = capsys.readouterr().out
    assert "random weights did better in this run (-0.200; pretrained ahead in 0 of 2 splits)" in out
    assert GAIN_MEASURED in out  # every verdict comes with the measured spread across pretraining seeds
