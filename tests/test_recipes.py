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
    values = _values(BASE + ["--recipe", "fast", "--config_overrides", "hidden_size=64,pre_layer_norm=false"])
    entries = dict(item.split("=") for item in values["config_overrides"].split(","))
    assert entries["hidden_size"] == "64" and entries["pre_layer_norm"] == "false"  # the user's, on top
    assert entries["attention_bias"] == "false" and entries["mlp_bias"] == "false"  # the recipe's, kept


def test_an_unknown_recipe_is_one_clear_error():
    with pytest.raises(UserError, match="not one of bert, fast"):
        parse(BASE + ["--recipe", "turbo"])


def test_a_fast_checkpoint_loads_through_remote_code_without_minibert(tmp_path):
    """Trained with `--recipe fast` (every architecture knob, MLM only), the output loads as a masked LM in a
    process where minibert cannot be imported, and predicts what the trained model predicts."""
    from pretrain.train import pretrain

    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "\n\n".join(
            f"the {w} sat on the mat .\na {w} is a {w} .\nno {w} here ."
            for w in ["cat", "dog", "cow", "hen", "fox", "owl", "pig", "rat"] * 3
        )
        + "\n"
    )
    out = tmp_path / "out"
    result = pretrain(
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
