"""A sentence-transformers model converts both ways with its pooling and normalisation, and embeds the same.

The model is built here: a tiny BERT (Transformer) + mean Pooling + Normalize, as sentence-transformers saves it.
"""

import json
import os

import pytest
import torch
from conftest import TINY
from transformers import BertConfig, BertModel

from minibert.cli import UserError
from minibert.convert import convert_checkpoint

st = pytest.importorskip("sentence_transformers")
from sentence_transformers import models as st_models  # noqa: E402

SENTENCES = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.", "Hello there!"]


@pytest.fixture
def st_model_dir(tmp_path, wordpiece_tokenizer):
    torch.manual_seed(0)
    bert = BertModel(BertConfig(**TINY), add_pooling_layer=False)
    bert.save_pretrained(tmp_path / "hf")
    wordpiece_tokenizer.save_pretrained(tmp_path / "hf")
    transformer = st_models.Transformer(str(tmp_path / "hf"), max_seq_length=32)
    pooling = st_models.Pooling(bert.config.hidden_size, "mean")
    model = st.SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()], device="cpu")
    model.save(str(tmp_path / "st"))
    return tmp_path / "st"


def encode(path, **kwargs):
    model = st.SentenceTransformer(str(path), device="cpu", **kwargs)
    return torch.from_numpy(model.encode(SENTENCES)), model


def test_sentence_transformers_model_converts_both_ways(st_model_dir, tmp_path):
    original, original_model = encode(st_model_dir)
    assert torch.allclose(original.norm(dim=-1), torch.ones(len(SENTENCES)))  # Normalize is part of the model

    convert_checkpoint(str(st_model_dir), str(tmp_path / "mini"))
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling", "2_Normalize"):
        assert os.path.exists(tmp_path / "mini" / name), name
    assert json.loads((tmp_path / "mini" / "config.json").read_text())["model_type"] == "minibert"
    converted, converted_model = encode(tmp_path / "mini", trust_remote_code=True)
    assert type(converted_model[0].auto_model).__name__ == "MiniBertModel"
    assert [type(m).__name__ for m in converted_model] == [type(m).__name__ for m in original_model]
    torch.testing.assert_close(converted, original, atol=1e-6, rtol=1e-6)

    convert_checkpoint(str(tmp_path / "mini"), str(tmp_path / "back"), to="bert")
    back, back_model = encode(tmp_path / "back")
    assert type(back_model[0].auto_model).__name__ == "BertModel"
    torch.testing.assert_close(back, original, atol=1e-6, rtol=1e-6)


def test_a_broken_module_list_is_refused_before_writing(st_model_dir, tmp_path):
    (st_model_dir / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "9_Missing", "type": "sentence_transformers.models.Pooling"}])
    )
    with pytest.raises(UserError, match="9_Missing"):
        convert_checkpoint(str(st_model_dir), str(tmp_path / "mini"))
    assert not (tmp_path / "mini").exists()
