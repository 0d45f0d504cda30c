"""Classification and regression metrics for the Trainer's `compute_metrics`, computed by scikit-learn and scipy
(not `evaluate`, which fetches its metric scripts from the Hub).

- single-label macro-F1 averages over the classes present in the references or the predictions;
- multi-label F1 works on indicator matrices, macro-F1 over every label column, 0/0 counted as 0;
- multi-label `exact_match` is scikit-learn's "subset accuracy" (every label of a record right).
Where a statistic is undefined (a constant input to a correlation) it is reported as 0.0, scikit-learn's choice for
MCC: "no correlation", and a number that checkpoint selection and JSON can both hold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats
from sklearn import metrics as sklearn_metrics

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)

# The metric that picks the best checkpoint, per problem type (all "greater is better").
BEST_METRIC = {SINGLE_LABEL: "accuracy", MULTI_LABEL: "f1_micro", REGRESSION: "pearson"}


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(sklearn_metrics.accuracy_score(references, predictions))


def macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in references or predictions."""
    return float(sklearn_metrics.f1_score(references, predictions, average="macro", zero_division=0))


def matthews_correlation(predictions: np.ndarray, references: np.ndarray) -> float:
    """Matthews correlation coefficient of a two-class problem (the GLUE CoLA metric)."""
    classes = np.union1d(predictions, references)
    if len(classes) > 2:
        raise ValueError(f"matthews_correlation is for two classes, got {len(classes)}")
    if len(classes) < 2:
        return 0.0  # one class only: no correlation (sklearn agrees, with a warning)
    return float(sklearn_metrics.matthews_corrcoef(references, predictions))


def _correlation(statistic, x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0  # undefined for a constant input (scipy returns nan and warns)
    return float(statistic(x, y)[0])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return _correlation(stats.pearsonr, x, y)


def spearmanr(x: np.ndarray, y: np.ndarray) -> float:
    return _correlation(stats.spearmanr, x, y)


def single_label_metrics(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    predictions = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    metrics = {"accuracy": accuracy(predictions, labels), "f1": macro_f1(predictions, labels)}
    if num_labels == 2:
        metrics["matthews_correlation"] = matthews_correlation(predictions, labels)
    return metrics


def multi_label_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = np.asarray(logits) > 0  # sigmoid(logit) > 0.5
    actual = np.asarray(labels) > 0.5  # (N, L) multi-hot
    return {
        "exact_match": float(sklearn_metrics.accuracy_score(actual, predicted)),
        "f1_micro": float(sklearn_metrics.f1_score(actual, predicted, average="micro", zero_division=0)),
        "f1_macro": float(sklearn_metrics.f1_score(actual, predicted, average="macro", zero_division=0)),
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"pearson": pearson(predictions, labels), "spearmanr": spearmanr(predictions, labels)}


def metric_names(problem_type: str, num_labels: int) -> list[str]:
    """The keys `compute_metrics` returns (without the `eval_` prefix the Trainer adds)."""
    if problem_type == SINGLE_LABEL:
        return ["accuracy", "f1"] + (["matthews_correlation"] if num_labels == 2 else [])
    if problem_type == MULTI_LABEL:
        return ["exact_match", "f1_micro", "f1_macro"]
    return ["pearson", "spearmanr"]


def build_compute_metrics(problem_type: str, num_labels: int) -> Callable:
    """A `compute_metrics` for `transformers.Trainer`: takes an `EvalPrediction`, returns a dict of floats."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):  # (logits, hidden_states, ...) when the model returns more
            logits = logits[0]
        if problem_type == SINGLE_LABEL:
            return single_label_metrics(logits, labels, num_labels)
        if problem_type == MULTI_LABEL:
            return multi_label_metrics(logits, labels)
        return regression_metrics(logits, labels)

    return compute_metrics
