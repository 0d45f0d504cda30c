"""Checkpoints on disk: exact save -> load through every Auto class, the tied MLM decoder, Hub-ready export, and a
checkpoint loaded as remote code (minibert not importable) running every pipeline.
"""

import json
import os
import sys

import pytest
import torch
from conftest import (
    CORPUS,
    TINY,
    assert_probe_matches_minibert,
    random_model,
    run_remote_probe,
    train_wordpiece,
    wrap_tokenizer,
)
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from minibert import AUTO_CLASSES, AUTO_MAP
from minibert.cli import UserError
from minibert.hub import push_to_hub, save_model_folder
from minibert.modeling_minibert import (
    CODE_FILES,
    MiniBertForMaskedLM,
    MiniBertForPreTraining,
    MiniBertForSequenceClassification,
    MiniBertModel,
)

TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}


def unprefixed(state: dict) -> dict:
    """State dict keys without the base model prefix, so a MiniBertModel and a head model can be compared."""
    return {k.removeprefix("bert."): v for k, v in state.items()}


def inputs_for(model, **batch) -> dict:
    """(B, S) inputs, or (B, 2, S) for multiple choice (each row as two choices, the second one reversed)."""
    if type(model).__name__ != "MiniBertForMultipleChoice":
        return batch
    return {k: torch.stack([v, v.flip(-1)], dim=1) for k, v in batch.items()}


def tied(model) -> bool:
    emb = model.get_input_embeddings().weight
    dec = model.get_output_embeddings().weight
    return dec is emb or dec.data_ptr() == emb.data_ptr()


# --------------------------------------------------------------------------------------------------------------
# Save -> load is exact, for every class, through every Auto class
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("auto_cls", AUTO_CLASSES, ids=lambda a: a.__name__)
def test_save_load_is_exact(auto_cls, tmp_path):
    model = random_model(AUTO_CLASSES[auto_cls])
    if model.get_output_embeddings() is not None:
        assert tied(model), "the MLM decoder is not tied to the input embeddings after init"
    model.save_pretrained(tmp_path)
    loaded = auto_cls.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype and torch.equal(actual[name], tensor), name
    if model.get_output_embeddings() is not None:
        assert tied(loaded), "the MLM decoder is not tied to the input embeddings after load"
        assert torch.equal(loaded.cls.predictions.decoder.bias, model.cls.predictions.bias)
    batch = dict(input_ids=torch.randint(5, 99, (2, 7)), attention_mask=torch.tensor([[1] * 7, [1] * 4 + [0] * 3]))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**inputs_for(model, **batch))[0], model(**inputs_for(model, **batch))[0], rtol=0, atol=0
        )


def test_tied_decoder_stays_tied_in_training_and_after_resize(tmp_path):
    model = random_model(MiniBertForMaskedLM)
    emb = model.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        emb[7] += 1.0  # one storage: a change to the embeddings is a change to the decoder
    assert torch.equal(model.cls.predictions.decoder.weight[7], emb[7])
    labels = torch.full((2, 6), -100)
    labels[:, 2] = 9
    model.train()
    model(input_ids=torch.randint(5, 99, (2, 6)), labels=labels).loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert tied(model)
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120 and tied(model)
    head = model.cls.predictions
    assert head.bias.shape == (120,) and head.decoder.bias is head.bias
    model.save_pretrained(tmp_path)
    again = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert again.get_input_embeddings().weight.shape == (120, 32) and tied(again)
    assert again(input_ids=torch.randint(5, 120, (1, 5))).logits.shape == (1, 5, 120)


@pytest.mark.parametrize("source", list(AUTO_CLASSES.values()), ids=lambda c: c.__name__)
def test_any_checkpoint_loads_through_every_auto_class(source, tmp_path):
    """E.g. a pretraining checkpoint loads as AutoModel and AutoModelForMaskedLM, its weights equal."""
    model = random_model(source)
    model.save_pretrained(tmp_path)
    saved = unprefixed(model.state_dict())
    for auto_cls, target in AUTO_CLASSES.items():
        # A classifier of another task (3 labels vs multiple choice's one score) does not fit: as with BERT's
        # classes, the user says so and gets a fresh one.
        with torch.device("meta"):
            fresh = unprefixed(target(model.config).state_dict())
        other_task = any(fresh[k].shape != saved[k].shape for k in fresh.keys() & saved.keys())
        loaded = auto_cls.from_pretrained(tmp_path, ignore_mismatched_sizes=other_task)
        assert type(loaded) is target
        state = unprefixed(loaded.state_dict())
        shared = {k for k in saved.keys() & state.keys() if saved[k].shape == state[k].shape}
        encoder = {k for k in saved if k.startswith(("embeddings.", "encoder."))}
        assert encoder <= shared, f"{target.__name__} from {source.__name__} lacks {sorted(encoder - shared)[:3]}"
        for name in shared:
            if name in TIED and TIED[name].removeprefix("bert.") in shared:
                continue  # a checkpoint that never had a decoder ties it to the embeddings, checked below
            assert torch.equal(state[name], saved[name]), f"{name}: {source.__name__} -> {target.__name__}"
        if loaded.get_output_embeddings() is not None:
            assert tied(loaded)
            assert loaded.cls.predictions.decoder.bias is loaded.cls.predictions.bias
        # Heads the checkpoint lacks are freshly initialised: real tensors, finite, never left on the meta device.
        for name, tensor in [*loaded.named_parameters(remove_duplicate=False), *loaded.named_buffers()]:
            where = f"{name}: {source.__name__} -> {target.__name__}"
            assert not tensor.is_meta and torch.isfinite(tensor).all(), where
        with torch.no_grad():
            assert torch.isfinite(loaded(**inputs_for(loaded, input_ids=torch.randint(5, 99, (1, 6))))[0]).all()


# --------------------------------------------------------------------------------------------------------------
# Hub-ready export
# --------------------------------------------------------------------------------------------------------------
def test_save_checkpoint_layout(tmp_path, wordpiece_tokenizer):
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "state.bin").write_text("training state")
    model = random_model(MiniBertForPreTraining, vocab_size=len(wordpiece_tokenizer))
    save_model_folder(model, wordpiece_tokenizer, str(out), model_card="# tiny\n")
    names = set(os.listdir(out))
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"}
    assert expected | set(CODE_FILES) <= names
    assert (out / "checkpoints" / "state.bin").read_text() == "training state"  # training state is left alone
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".saving-")]  # the staging folder is gone
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and config["model_type"] == "minibert"
    assert config["architectures"] == ["MiniBertForPreTraining"]
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] in ("BertTokenizer", "BertTokenizerFast"), tok_config["tokenizer_class"]
    assert tok_config["model_max_length"] == TINY["max_position_embeddings"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer).__name__.startswith("BertTokenizer")
    for text in CORPUS[:3]:
        assert tokenizer(text)["input_ids"] == wordpiece_tokenizer(text)["input_ids"]
    pair = tokenizer("paris is", "the capital")
    assert pair["token_type_ids"][-1] == 1 and pair["token_type_ids"][0] == 0  # segment ids for sentence pairs
    # Saving again over it replaces the model and keeps the training state.
    save_model_folder(random_model(MiniBertForPreTraining, seed=1, vocab_size=len(wordpiece_tokenizer)), None, str(out))
    assert (out / "checkpoints" / "state.bin").exists() and (out / "tokenizer.json").exists()


def _encodings(tokenizer, texts):
    return [tokenizer(*t)["input_ids"] if isinstance(t, tuple) else tokenizer(t)["input_ids"] for t in texts]


def test_cased_tokenizer_stays_cased(tmp_path):
    """BertTokenizer rebuilds its normalizer from do_lower_case (default True): a cased vocabulary must say so."""
    cased = wrap_tokenizer(train_wordpiece(lowercase=False, corpus=CORPUS + [c.upper() for c in CORPUS]))
    model = random_model(MiniBertForMaskedLM, vocab_size=len(cased))
    save_model_folder(model, cased, str(tmp_path))
    tok_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "BertTokenizer" and tok_config["do_lower_case"] is False
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["PARIS is the Capital", ("Hello World", "HELLO world"), "héllo, Wörld!"]
    assert _encodings(reloaded, texts) == _encodings(cased, texts)
    assert reloaded.tokenize("PARIS paris") != reloaded.tokenize("paris paris")
    # vocab.txt, for BERT tokenizers that do not read tokenizer.json, lists the vocabulary in id order.
    vocab = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(vocab) == len(cased)


def test_non_bert_tokenizer_is_not_relabelled(tmp_path):
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=90, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    )
    wrapped = wrap_tokenizer(bpe)
    save_model_folder(random_model(MiniBertForMaskedLM, vocab_size=len(wrapped)), wrapped, str(tmp_path))
    tok_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loads tokenizer.json as it is
    assert not (tmp_path / "vocab.txt").exists()
    texts = ["Paris is the capital", "Hello World"]
    assert _encodings(AutoTokenizer.from_pretrained(tmp_path), texts) == _encodings(wrapped, texts)


class RecordingApi:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        if self.fail:
            raise ConnectionError("network is down")
        self.calls.append(("upload_folder", kwargs))


def test_push_to_hub_uploads_the_folder(tmp_path):
    api = RecordingApi()
    url = push_to_hub(str(tmp_path), "me/tiny", api=api)
    assert url == "https://huggingface.co/me/tiny"
    (_, repo_id, kwargs), (_, upload) = api.calls
    assert repo_id == "me/tiny" and upload["repo_id"] == "me/tiny" and upload["folder_path"] == str(tmp_path)
    assert "checkpoints/*" in upload["ignore_patterns"]
    with pytest.raises(UserError, match="hub_model_id"):
        push_to_hub(str(tmp_path), None, api=api)
    with pytest.raises(UserError, match="network is down"):
        push_to_hub(str(tmp_path), "me/tiny", api=RecordingApi(fail=True))


# --------------------------------------------------------------------------------------------------------------
# Remote code: a machine without minibert loads the checkpoint and runs every pipeline
# --------------------------------------------------------------------------------------------------------------
def test_remote_code_pipelines_without_minibert(tmp_path, wordpiece_tokenizer):
    paths, out = run_remote_probe(sys.executable, tmp_path, wordpiece_tokenizer)
    for name in ("pretraining", "seq", "tok", "qa"):
        tok_config = json.loads((tmp_path / name / "tokenizer_config.json").read_text())
        assert tok_config["tokenizer_class"] in ("BertTokenizer", "BertTokenizerFast")
        assert tok_config["tokenizer_class"] != "TokenizersBackend"
    assert_probe_matches_minibert(paths, out)

    assert out["resaved_class"] == "MiniBertModel"
    resaved = tmp_path / "resaved"
    assert {*CODE_FILES, "config.json", "model.safetensors"} <= set(os.listdir(resaved))
    assert json.loads((resaved / "config.json").read_text())["auto_map"] == AUTO_MAP
    for name in CODE_FILES:  # the same code, byte for byte
        assert (resaved / name).read_bytes() == (tmp_path / "pretraining" / name).read_bytes()


def test_loading_a_pretraining_checkpoint_into_other_heads_is_quiet(tmp_path, wordpiece_tokenizer, capfd):
    """The NSP head and pooler a masked-LM model does not use are expected: no load report for a newcomer to misread."""
    path = tmp_path / "pretraining"
    save_model_folder(
        random_model(MiniBertForPreTraining, vocab_size=len(wordpiece_tokenizer)), wordpiece_tokenizer, path
    )
    capfd.readouterr()
    fill = pipeline("fill-mask", model=str(path))
    fill("paris is the [MASK] of france.")
    MiniBertModel.from_pretrained(path)
    MiniBertForSequenceClassification.from_pretrained(path, num_labels=2)  # its new classifier is reported, rightly
    err = capfd.readouterr().err
    assert "UNEXPECTED" not in err, err


def test_checkpoint_files_are_readable_as_the_umask_allows(tmp_path, wordpiece_tokenizer):
    old = os.umask(0o022)
    try:
        save_model_folder(
            random_model(MiniBertForPreTraining, vocab_size=len(wordpiece_tokenizer)),
            wordpiece_tokenizer,
            tmp_path / "ckpt",
        )
    finally:
        os.umask(old)
    modes = {name: os.stat(tmp_path / "ckpt" / name).st_mode & 0o777 for name in os.listdir(tmp_path / "ckpt")}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer"  # what transformers 4.x pipelines need to load a tokenizer
