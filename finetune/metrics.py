"""Classification and regression metrics in numpy (no scikit-learn / `evaluate`: `evaluate` fetches its metric
scripts from the Hub).

Conventions follow scikit-learn's defaults so that it can serve as the oracle in the tests:
- single-label macro-F1 averages over the classes present in the references or the predictions;
- multi-label F1 works on indicator matrices, macro-F1 over every label column, 0/0 counted as 0;
- multi-label `exact_match` is scikit-learn's "subset accuracy" (every label of a record right).
Where a statistic is undefined (a constant input to a correlation, MCC with an empty row or column of the
confusion matrix) it is reported as 0.0, scikit-learn's choice for MCC: "no correlation", and a number that
checkpoint selection and JSON can both hold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)

# The metric that picks the best checkpoint, per problem type (all "greater is better").
BEST_METRIC = {SINGLE_LABEL: "accuracy", MULTI_LABEL: "f1_micro", REGRESSION: "pearson"}


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(references)))


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    # F1 = 2tp / (2tp + fp + fn); a class with no true and no predicted member scores 0.
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(tp.shape, dtype=float), where=denominator > 0)


def macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in references or predictions."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    classes = np.union1d(predictions, references)
    p = predictions[None, :] == classes[:, None]  # (C, N) one-hot predictions
    r = references[None, :] == classes[:, None]  # (C, N) one-hot references
    tp = (p & r).sum(1)
    fp = (p & ~r).sum(1)
    fn = (~p & r).sum(1)
    return float(_f1(tp, fp, fn).mean())


def matthews_correlation(predictions: np.ndarray, references: np.ndarray) -> float:
    """Matthews correlation coefficient of a two-class problem (the GLUE CoLA metric)."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    classes = np.union1d(predictions, references)
    if len(classes) > 2:
        raise ValueError(f"matthews_correlation is for two classes, got {len(classes)}")
    positive = classes[-1]
    p, r = predictions == positive, references == positive
    tp, tn = float(np.sum(p & r)), float(np.sum(~p & ~r))
    fp, fn = float(np.sum(p & ~r)), float(np.sum(~p & r))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else float((tp * tn - fp * fn) / denominator)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denominator == 0 else float((x * y).sum() / denominator)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of the ranks they span (scipy.stats.rankdata 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start index of each run of equal values, and the run each sorted element belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    run = np.cumsum(np.r_[True, sorted_x[1:] != sorted_x[:-1]]) - 1
    ends = np.r_[starts[1:], len(x)]  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[run]
    return ranks


def spearmanr(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


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
    tp = (predicted & actual).sum(0)
    fp = (predicted & ~actual).sum(0)
    fn = (~predicted & actual).sum(0)
    return {
        "exact_match": float(np.mean(np.all(predicted == actual, axis=1))),
        "f1_micro": float(_f1(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[0]),
        "f1_macro": float(_f1(tp, fp, fn).mean()),
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
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
