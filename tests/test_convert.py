"""`minibert-convert` and `load_pretrained_minibert` on checkpoints on disk: round trips through transformers' BERT,
and every kind of bad input ending in one clear error.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY
from transformers import (
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertLMHeadModel,
    BertModel,
)

from minibert import AUTO_MAP, MiniBertConfig
from minibert.cli import UserError
from minibert.convert import bert_to_minibert, cli, load_pretrained_minibert
from minibert.modeling_minibert import (
    CODE_FILES,
    MiniBertForMaskedLM,
    MiniBertForPreTraining,
    MiniBertForSequenceClassification,
    MiniBertModel,
)

LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def make_batch(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    ids = torch.randint(5, TINY["vocab_size"], (2, 9), generator=g).masked_fill(mask == 0, 0)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.tensor([[0] * 5 + [1] * 4, [0] * 3 + [1] * 6]))


def assert_outputs_equal(ours, theirs, batch, names):
    real = batch["attention_mask"].bool()
    for name in names:
        a, e = getattr(ours, name), getattr(theirs, name)
        if a.dim() == 3:  # per-token: real positions only
            a, e = a[real], e[real]
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def save_bert(directory, cls, tokenizer=None, seed=0, **config):
    torch.manual_seed(seed)
    model = cls(BertConfig(**TINY, **config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def bert_pretraining_dir(tmp_path_factory, wordpiece_tokenizer):
    directory = tmp_path_factory.mktemp("bert-pretraining")
    return directory, save_bert(directory, BertForPreTraining, wordpiece_tokenizer)


# --------------------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------------------
ROUND_TRIPS = {
    # id: (BERT class, config, Auto class for the MiniBERT checkpoint, outputs compared)
    "pretraining": (BertForPreTraining, {}, AutoModelForPreTraining, ["prediction_logits", "seq_relationship_logits"]),
    "classifier": (
        BertForSequenceClassification,
        {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}},
        AutoModelForSequenceClassification,
        ["logits"],
    ),
}


@pytest.mark.parametrize("kind", ROUND_TRIPS)
def test_cli_round_trip(kind, tmp_path, wordpiece_tokenizer, capsys):
    bert_cls, config, auto_cls, outputs = ROUND_TRIPS[kind]
    src, mini_dir, back_dir = tmp_path / "bert", tmp_path / "mini", tmp_path / "back"
    original = save_bert(src, bert_cls, wordpiece_tokenizer, **config)
    batch = make_batch()

    assert cli([str(src), str(mini_dir)]) == 0
    assert f"wrote Mini{bert_cls.__name__}" in capsys.readouterr().out
    saved = json.loads((mini_dir / "config.json").read_text())
    assert saved["model_type"] == "minibert" and saved["auto_map"] == AUTO_MAP
    assert saved["architectures"] == [f"Mini{bert_cls.__name__}"]
    assert {*CODE_FILES, "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(mini_dir))
    mini = auto_cls.from_pretrained(mini_dir).eval()
    encoder = AutoModel.from_pretrained(mini_dir).eval()
    assert type(mini).__name__ == f"Mini{bert_cls.__name__}" and type(encoder) is MiniBertModel
    with torch.no_grad():
        assert_outputs_equal(mini(**batch), original(**batch), batch, outputs)
        assert_outputs_equal(encoder(**batch), original.bert(**batch), batch, ["last_hidden_state", "pooler_output"])
    if "id2label" in config:
        assert mini.config.id2label == LABELS and mini.config.label2id == config["label2id"]

    assert cli([str(mini_dir), str(back_dir), "--to", "bert"]) == 0
    back = bert_cls.from_pretrained(back_dir).eval()
    assert json.loads((back_dir / "config.json").read_text())["model_type"] == "bert"
    expected = original.state_dict()
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    with torch.no_grad():
        assert_outputs_equal(back(**batch), original(**batch), batch, outputs)
    if "id2label" in config:
        assert back.config.id2label == LABELS
    text = "paris is the capital of france"
    assert AutoTokenizer.from_pretrained(back_dir)(text)["input_ids"] == wordpiece_tokenizer(text)["input_ids"]


def test_console_script_converts(tmp_path, bert_pretraining_dir):
    """The installed entry point itself (one subprocess; the other CLI tests call `cli(argv)` in-process)."""
    src, original = bert_pretraining_dir
    script = os.path.join(os.path.dirname(sys.executable), "minibert-convert")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "minibert.convert"]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([*command, str(src), str(tmp_path / "mini")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    mini = AutoModelForPreTraining.from_pretrained(tmp_path / "mini").eval()
    batch = make_batch()
    with torch.no_grad():
        assert_outputs_equal(mini(**batch), original(**batch), batch, ["prediction_logits"])


def test_load_pretrained_minibert_gives_a_fresh_head(bert_pretraining_dir):
    src, original = bert_pretraining_dir
    model = load_pretrained_minibert(MiniBertForSequenceClassification, str(src), num_labels=3, id2label=LABELS)
    assert isinstance(model, MiniBertForSequenceClassification) and model.config.id2label == LABELS
    encoder = {k: v for k, v in model.state_dict().items() if k.startswith("bert.")}
    converted = bert_to_minibert(original).state_dict()
    for name, tensor in encoder.items():
        assert torch.equal(tensor, converted[name]), name
    assert model.classifier.weight.shape == (3, TINY["hidden_size"]) and torch.isfinite(model.classifier.weight).all()
    batch = make_batch()
    with torch.no_grad():
        assert_outputs_equal(model.bert.eval()(**batch), original.bert(**batch), batch, ["last_hidden_state"])
    # And a MiniBERT checkpoint loads directly, whichever class saved it.
    again = load_pretrained_minibert(MiniBertForMaskedLM, str(src))
    assert isinstance(again, MiniBertForMaskedLM)


def test_load_pretrained_minibert_reads_minibert_checkpoints(tmp_path):
    model = MiniBertForPreTraining(MiniBertConfig(**TINY)).eval()
    model.save_pretrained(tmp_path)
    loaded = load_pretrained_minibert(MiniBertModel, str(tmp_path))
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[f"bert.{name}"]), name


# --------------------------------------------------------------------------------------------------------------
# Bad input -> one clear error
# --------------------------------------------------------------------------------------------------------------
def test_shape_mismatch_is_a_user_error(bert_pretraining_dir, tmp_path):
    src, _ = bert_pretraining_dir
    wider = MiniBertConfig(**{**TINY, "hidden_size": 64})
    with pytest.raises(UserError, match=r"hidden_size=32 in the checkpoint but 64"):
        load_pretrained_minibert(MiniBertForSequenceClassification, str(src), config=wider)
    MiniBertForPreTraining(MiniBertConfig(**TINY)).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"vocab_size=99 in the checkpoint but 50.*word_embeddings"):
        smaller = MiniBertConfig(**{**TINY, "vocab_size": 50})
        load_pretrained_minibert(MiniBertForMaskedLM, str(tmp_path), config=smaller)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_damaged_weights_are_a_user_error(damage, tmp_path):
    MiniBertForPreTraining(MiniBertConfig(**TINY)).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00not a safetensors file" * 50)
    else:
        weights.unlink()
    with pytest.raises(UserError, match=r"cannot load .* as MiniBertForMaskedLM: ") as info:
        load_pretrained_minibert(MiniBertForMaskedLM, str(tmp_path))
    assert "\n" not in str(info.value)
    if damage != "missing":
        assert "damaged or truncated" in str(info.value)


def test_non_bert_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32}))
    with pytest.raises(UserError, match="'gpt2' checkpoint, not a BERT"):
        load_pretrained_minibert(MiniBertForMaskedLM, str(tmp_path))


def test_unconvertible_bert_models_are_user_errors():
    with pytest.raises(UserError, match="decoder"):
        bert_to_minibert(BertModel(BertConfig(**TINY, is_decoder=True)))
    with pytest.raises(UserError, match="no MiniBERT counterpart"):
        bert_to_minibert(BertLMHeadModel(BertConfig(**TINY, is_decoder=True)))
    with pytest.raises(UserError, match="position_embedding_type"):
        bert_to_minibert(BertForMaskedLM(BertConfig(**TINY, position_embedding_type="relative_key")))


def _gpt2_dir(path):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    return path


BAD_CALLS = {
    # id: a function of tmp_path returning (argv, DST)
    "missing_src": lambda t: ([str(t / "no-such-dir"), str(t / "dst")], t / "dst"),
    "missing_relative_src": lambda t: (["./no/such/dir", str(t / "dst")], t / "dst"),
    "missing_bare_name": lambda t: (["no-such-checkpoint", str(t / "dst")], t / "dst"),  # tried on the (offline) Hub
    "not_bert": lambda t: ([str(_gpt2_dir(t / "gpt2")), str(t / "dst")], t / "dst"),
    "not_minibert": lambda t: ([str(_gpt2_dir(t / "gpt2")), str(t / "dst"), "--to", "bert"], t / "dst"),
    "src_is_dst": lambda t: ([str(_gpt2_dir(t / "gpt2")), str(t / "gpt2") + "/"], t / "gpt2"),
    "src_is_a_file": lambda t: ([str(_gpt2_dir(t / "gpt2") / "config.json"), str(t / "dst")], t / "dst"),
    "no_config": lambda t: ([str(t), str(t / "dst")], t / "dst"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_cli_refuses_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, dst = BAD_CALLS[case](tmp_path)
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()} if dst.exists() else None
    assert cli(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    if before is None:
        assert not dst.exists(), "DST was created by a failed conversion"
    else:
        assert {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before, "DST was changed"


def test_cli_failure_leaves_an_existing_dst_intact(tmp_path, capsys):
    src = tmp_path / "src"
    MiniBertForPreTraining(MiniBertConfig(**TINY)).save_pretrained(src)
    (src / "model.safetensors").write_bytes(b"\x00" * 100)  # damaged
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "config.json").write_text("{}")
    assert cli([str(src), str(dst), "--to", "bert"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "damaged or truncated" in err and "Traceback" not in err
    assert os.listdir(dst) == ["config.json"] and (dst / "config.json").read_text() == "{}"
    # DST that is a file is refused before anything is loaded.
    (tmp_path / "file").write_text("x")
    assert cli([str(src), str(tmp_path / "file"), "--to", "bert"]) == 2
    assert capsys.readouterr().err.startswith("error: ") and (tmp_path / "file").read_text() == "x"
