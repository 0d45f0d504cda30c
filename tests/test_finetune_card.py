"""The model card's Hub metadata and usage snippet per problem type, and the choice of the best-checkpoint metric."""

import pytest
import yaml

from finetune.card import CardInfo, render_model_card
from finetune.metrics import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from finetune.train import pick_best_metric
from minibert.cli import UserError


def card(**overrides) -> tuple[dict, str]:
    info = dict(
        model_name="me/tiny-sst2",
        model_path="me/tiny-sst2",
        base_model="`google-bert/bert-base-uncased`",
        base_model_id="google-bert/bert-base-uncased",
        problem_type=SINGLE_LABEL,
        label_names=["negative", "positive"],
        data_description="the dataset `glue` (`sst2`)",
        dataset_id="glue",
        dataset_config="sst2",
        metrics={
            "eval_accuracy": 0.91234,
            "eval_f1": 0.9,
            "eval_matthews_correlation": 0.8,
            "eval_loss": 0.3,
            "test_accuracy": 0.9,
            "train_runtime": 12.0,
        },
        hyperparameters={"learning_rate": "5e-05"},
        architecture="2 layers",
        example_text="a fine film",
    )
    text = render_model_card(CardInfo(**{**info, **overrides}))
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_single_label_card():
    meta, body = card()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == "google-bert/bert-base-uncased" and meta["datasets"] == ["glue"]
    assert meta["metrics"] == ["accuracy", "f1", "matthews_correlation"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"] == {
        "name": "the dataset `glue` (`sst2`)",
        "type": "glue",
        "split": "validation",
        "config": "sst2",
    }
    assert {"type": "accuracy", "value": 0.9123, "name": "Accuracy"} in result["metrics"]
    assert 'pipeline("text-classification", model="me/tiny-sst2", trust_remote_code=True)' in body
    assert "print(classifier('a fine film'))" in body
    assert "## Results on the test set" in body and "| Accuracy | 0.9000 |" in body


def test_local_paths_stay_out_of_the_metadata(tmp_path):
    meta, body = card(base_model_id=str(tmp_path), dataset_id=None, model_path="outputs/finetune")
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "custom"
    assert 'model="outputs/finetune"' in body


def test_multi_label_and_regression_cards():
    meta, body = card(
        problem_type=MULTI_LABEL,
        label_names=["a", "b", "c"],
        metrics={"eval_exact_match": 0.5, "eval_f1_micro": 0.7, "eval_f1_macro": 0.6},
    )
    assert "multi-label-classification" in meta["tags"] and meta["metrics"] == ["exact_match", "f1"]
    assert "top_k=None" in body
    meta, body = card(
        problem_type=REGRESSION,
        label_names=[],
        metrics={"eval_pearson": 0.8, "eval_spearmanr": 0.7},
        is_pair=True,
        example_text="first",
        example_pair="second",
    )
    assert "regression" in meta["tags"] and meta["metrics"] == ["pearsonr", "spearmanr"]
    assert 'function_to_apply="none"' in body and "## Labels" not in body
    assert "classifier({\"text\": 'first', \"text_pair\": 'second'})" in body


def test_best_metric():
    assert pick_best_metric(None, SINGLE_LABEL, 2) == "accuracy"
    assert pick_best_metric("eval_f1", SINGLE_LABEL, 3) == "f1"
    assert pick_best_metric(None, MULTI_LABEL, 4) == "f1_micro"
    assert pick_best_metric("loss", REGRESSION, 1) == "loss"
    with pytest.raises(UserError, match="this task reports pearson, spearmanr, loss"):
        pick_best_metric("accuracy", REGRESSION, 1)
