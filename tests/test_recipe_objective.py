"""MLM-only pretraining (`--next_sentence_prediction false`) and evaluation at another masking rate.

Oracles: the tokenized documents themselves (the packed examples are their sentences in order, nothing else),
data statistics (the share of masked tokens), and transformers' Auto classes / fill-mask pipeline for the output.
"""

import json
import random

import pytest

from pretrain.__main__ import parse
from pretrain.data import prepare
from pretrain.train import run


def _corpus(path, n_docs=40, seed=0) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta"]
    docs = [
        [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + " ." for _ in range(rng.randint(1, 9))]
        for _ in range(n_docs)
    ]
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    return str(path)


def _args(tmp_path, *extra):
    return [
        "--train_file",
        _corpus(tmp_path / "c.txt"),
        "--data_cache_dir",
        str(tmp_path / "cache"),
        "--output_dir",
        str(tmp_path / "out"),
        "--vocab_size",
        "100",
        "--max_seq_length",
        "32",
        "--dupe_factor",
        "1",
        "--config_overrides",
        "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64",
        "--per_device_train_batch_size",
        "8",
        "--logging_steps",
        "2",
        "--seed",
        "0",
        *map(str, extra),
    ]


def test_mlm_only_examples_are_the_documents_sentences_packed_in_order(tmp_path):
    _, data_args, _, _ = parse(
        _args(
            tmp_path,
            "--next_sentence_prediction",
            "false",
            "--short_seq_prob",
            "0",
            "--validation_split_percentage",
            "0",
        )
    )
    data = prepare(data_args, seed=0)
    tok = data.tokenizer
    rows = data.train_dataset
    assert "next_sentence_label" not in rows.column_names
    body = []
    for ids, types in zip(rows["input_ids"], rows["token_type_ids"]):
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and ids[1] != tok.sep_token_id
        assert set(types) == {0} and len(ids) <= 32
        body.extend(i for i in ids[1:-1] if i != tok.sep_token_id)  # inner [SEP]s: where a document ends
    # The oracle: every document's text tokenized, in corpus order (one dupe, no short targets: nothing dropped).
    text = open(data_args.train_file[0]).read()
    expected = [
        i
        for doc in text.split("\n\n")
        for line in doc.split("\n")
        if line
        for i in tok(line, add_special_tokens=False)["input_ids"]
    ]
    assert sorted(body) == sorted(expected)  # the same tokens (map batches may reorder documents) ...
    assert data.stats["fill"] > 0.8  # ... packed across documents, not one sentence per example
    assert data.stats["is_next_fraction"] is None


def test_an_mlm_only_run_is_a_masked_lm_evaluated_at_its_own_rate(tmp_path):
    """Trained at 40% masking, evaluated at 15% (--eval_mlm_probability): the eval batches mask ~15%."""
    from transformers import AutoModelForMaskedLM, pipeline

    import minibert  # noqa: F401

    result = run(
        *parse(
            _args(
                tmp_path,
                "--next_sentence_prediction",
                "false",
                "--max_train_steps",
                6,
                "--mlm_probability",
                0.4,
                "--eval_mlm_probability",
                0.15,
                "--validation_split_percentage",
                25,
            )
        )
    )
    assert result["status"] == "completed"
    assert "eval_nsp_accuracy" not in result and "eval_mlm_accuracy" in result
    assert result["eval_loss"] == pytest.approx(result["eval_mlm_loss"])
    stats = json.load(open(tmp_path / "out" / "data_stats.json"))
    real_tokens = stats["eval_instance_tokens"] - 2 * stats["eval_instances"]  # [CLS] and [SEP] are never masked
    assert result["eval_masked_tokens"] / real_tokens == pytest.approx(0.15, abs=0.05)
    config = json.load(open(tmp_path / "out" / "config.json"))
    assert config["architectures"] == ["MiniBertForMaskedLM"]
    records = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert all("nsp_loss" not in r for r in records)
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "out"))
    assert not hasattr(model.cls, "seq_relationship")
    card = (tmp_path / "out" / "README.md").read_text()  # the card states the run's objective, not BERT's
    assert "masked-language modelling" in card and "next-sentence" not in card.lower()
    assert len(pipeline("fill-mask", model=str(tmp_path / "out"))("alpha [MASK] gamma .")) == 5


def test_mlm_only_with_streaming_is_one_clear_error(tmp_path):
    from minibert.cli import UserError

    with pytest.raises(UserError, match="--streaming"):
        parse(_args(tmp_path, "--next_sentence_prediction", "false", "--streaming", "true", "--max_train_steps", 2))
