"""`--recipe`: named defaults under config files and flags (pretrain/recipes.py)."""

import dataclasses
import json

import pytest
import torch
from conftest import run_without_minibert

from minibert.cli import UserError
from pretrain.__main__ import parse
from pretrain.recipes import RECIPES

BASE = ["--train_file", "corpus.txt"]


def _values(argv) -> dict:
    return {k: v for group in parse(argv) for k, v in dataclasses.asdict(group).items()}


def test_bert_is_the_faithful_default():
    assert RECIPES["bert"] == {}
    plain, bert = _values(BASE), _values(BASE + ["--recipe", "bert"])
    assert {k: v for k, v in plain.items() if k != "recipe"} == {k: v for k, v in bert.items() if k != "recipe"}
    assert plain["next_sentence_prediction"] and plain["mlm_probability"] == 0.15 and plain["config_overrides"] is None


def test_fast_sets_what_it_says_and_flags_and_files_win(tmp_path):
    fast = _values(BASE + ["--recipe", "fast"])
    for key, value in RECIPES["fast"].items():
        assert fast[key] == value, key
    assert fast["schedule_by"] == "steps"  # no time budget
    assert _values(BASE + ["--recipe", "fast", "--time_budget", "5"])["schedule_by"] == "time"
    # An explicit flag wins over the recipe ...
    assert _values(BASE + ["--recipe", "fast", "--mlm_probability", "0.2"])["mlm_probability"] == 0.2
    # ... so does a config file, which may also name the recipe.
    config = tmp_path / "run.yaml"
    config.write_text("recipe: fast\nlearning_rate: 3.0e-4\ntrain_file: corpus.txt\n")
    from_file = _values([str(config)])
    assert from_file["learning_rate"] == 3e-4 and from_file["next_sentence_prediction"] is False


def test_a_users_config_overrides_merge_with_the_recipes():
    model_args = parse(BASE + ["--recipe", "fast", "--config_overrides", "hidden_size=64,pre_layer_norm=false"])[0]
    entries = model_args.overrides  # typed once, at parse time
    assert entries["hidden_size"] == 64 and entries["pre_layer_norm"] is False  # the user's, on top
    assert entries["attention_bias"] is False and entries["mlp_bias"] is False  # the recipe's, kept
    assert entries["hidden_dropout_prob"] == 0.0


def test_an_unknown_recipe_is_one_clear_error():
    with pytest.raises(UserError, match="not one of bert, fast"):
        parse(BASE + ["--recipe", "turbo"])


def test_a_fast_checkpoint_loads_through_remote_code_without_minibert(tmp_path):
    """Trained with `--recipe fast` (every architecture knob, MLM only), the output loads as a masked LM in a
    process where minibert cannot be imported, and predicts what the trained model predicts."""
    from pretrain.train import run

    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "\n\n".join(
            f"the {w} sat on the mat .\na {w} is a {w} .\nno {w} here ."
            for w in ["cat", "dog", "cow", "hen", "fox", "owl", "pig", "rat"] * 3
        )
        + "\n"
    )
    out = tmp_path / "out"
    result = run(
        *parse(
            [
                "--recipe",
                "fast",
                "--train_file",
                str(corpus),
                "--data_cache_dir",
                str(tmp_path / "cache"),
                "--output_dir",
                str(out),
                "--vocab_size",
                "100",
                "--max_seq_length",
                "32",
                "--max_train_steps",
                "4",
                "--per_device_train_batch_size",
                "4",
                "--config_overrides",
                "hidden_size=32,num_hidden_layers=1,num_attention_heads=2",
            ]
        )
    )
    assert result["status"] == "completed" and "eval_nsp_accuracy" not in result
    config = json.load(open(out / "config.json"))
    assert config["architectures"] == ["MiniBertForMaskedLM"]
    assert config["pre_layer_norm"] and not config["attention_bias"] and not config["mlp_bias"]
    ids = [[2, 10, 11, 12, 4, 3]]
    script = (
        "import json, sys, torch\n"
        "sys.modules['minibert'] = None\n"
        "from transformers import AutoModelForMaskedLM\n"
        "m = AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "with torch.no_grad():\n"
        "    print(json.dumps(m(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits[0, 4].tolist()))\n"
    )
    remote_logits = run_without_minibert(["-c", script, out, json.dumps(ids)], cwd=tmp_path)
    from transformers import AutoModelForMaskedLM

    import minibert  # noqa: F401

    local = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        expected = local(input_ids=torch.tensor(ids)).logits[0, 4]
    torch.testing.assert_close(torch.tensor(remote_logits), expected)


# ----------------------------------------------------------------------------------------------------------------
# benchmarks/bench_recipe.py: the corpora `fast` was not tuned on, and how its verdicts are drawn
# ----------------------------------------------------------------------------------------------------------------
def _bench():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "bench_recipe.py")
    spec = importlib.util.spec_from_file_location("bench_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAN_PAGE = r""".\" generated by hand for the test
.TH FROB 1 "May 2026" "frob 1.0" "User Commands"
.SH NAME
frob \- turn widgets into gadgets
.SH SYNOPSIS
.B frob
[\fIOPTION\fR]... \fIFILE\fR
.SH DESCRIPTION
.PP
The \fBfrob\fR program reads each widget from
\fIFILE\fR and writes the matching gadget.
It never changes the input file\(em it only reads it.
.PP
Options are read before files:
.nf
frob \-x widgets.txt > gadgets.txt
.fi
.TP
\fB\-x\fR, \fB\-\-extra\fR
add extra gadgets to the output, one per line.
.SH SEE ALSO
The widget manual in full, which lists every gadget.
"""


def test_man_page_prose_keeps_running_text_and_resolves_roff():
    paragraphs = _bench().man_page_prose(MAN_PAGE)
    assert paragraphs == [
        [
            "The frob program reads each widget from FILE and writes the matching gadget.",
            "It never changes the input file- it only reads it.",
        ],
        ["add extra gadgets to the output, one per line."],
    ]  # no NAME, SYNOPSIS, no-fill example, option tag (not a sentence) or SEE ALSO


def test_man_corpus_is_read_from_the_section_folders_and_missing_is_said(tmp_path):
    import gzip

    bench = _bench()
    with pytest.raises(bench.MissingCorpus, match="no man pages"):
        bench.man_documents(str(tmp_path))
    (tmp_path / "man1").mkdir()
    (tmp_path / "man3").mkdir()
    with gzip.open(tmp_path / "man1" / "frob.1.gz", "wt") as f:
        f.write(MAN_PAGE)
    (tmp_path / "man3" / "frob.3").write_text(MAN_PAGE.replace("frob", "libfrob"))
    (tmp_path / "man1" / "frobnicate.1").write_text(".so man1/frob.1\n")  # a link: not a second document
    found = bench.man_documents(str(tmp_path))
    assert [(section, len(sentences)) for section, _, sentences in found] == [("1", 3), ("3", 3)]


def test_a_corpus_is_split_by_document_into_pretraining_held_out_and_task(tmp_path):
    bench = _bench()
    pytest.importorskip("pydoc_data.topics")
    meta = bench.build_corpus("pydocs", str(tmp_path), max_train_mb=10)
    train = open(meta["train_file"]).read().split("\n\n")
    held_out = open(meta["validation_file"]).read().split("\n\n")
    assert len(train) == meta["documents"] and len(held_out) == meta["held_out_documents"] > 0
    train_sentences = {s for doc in train for s in doc.splitlines()}
    held_sentences = {s for doc in held_out for s in doc.splitlines()}
    # Documents are split, and the topics' repeats of one another removed: no held-out sentence is pretrained on.
    assert held_sentences and not held_sentences & train_sentences
    import csv

    rows = [
        row for split in ("train", "validation", "test") for row in csv.DictReader(open(tmp_path / f"task_{split}.csv"))
    ]
    assert sum(meta["task_examples"].values()) == len(rows) > 0
    assert {row["label"] for row in rows} == {"original", "shuffled"}
    assert not {row["text"] for row in rows if row["label"] == "original"} & train_sentences
    assert bench.build_corpus("pydocs", str(tmp_path), max_train_mb=10) == meta  # cached


def test_word_order_rows_are_the_sentence_or_a_shuffle_of_it():
    import random

    sentences = [f"word{i} and then some more words number {i} here." for i in range(200)]
    rows = _bench().word_order_rows(sentences, random.Random(0))
    assert len(rows) == 200 and 70 < sum(label == "shuffled" for _, label in rows) < 130
    for (text, label), sentence in zip(rows, sentences):
        assert sorted(text.split()) == sorted(sentence.split())
        assert (text == sentence) == (label == "original")


def test_a_difference_within_the_seed_spread_is_no_difference():
    verdict = _bench().verdict
    assert verdict([0.20, 0.23], [0.23, 0.24])["verdict"] == "no difference"  # +0.02, within bert's spread 0.03
    assert verdict([0.20, 0.21], [0.24, 0.245])["verdict"] == "fast better"  # +0.0375 > 0.01
    assert verdict([0.20, 0.21], [0.17, 0.175])["verdict"] == "bert better"
    assert verdict([5.0, 5.1], [4.5, 4.55], higher_is_better=False)["verdict"] == "fast better"  # a loss
    assert verdict([0.2], [0.3])["verdict"] == "one seed"
