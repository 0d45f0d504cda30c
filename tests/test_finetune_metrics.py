"""finetune.metrics (scikit-learn / scipy underneath): our wiring of them checked against hand-worked values."""

import numpy as np
import pytest

from finetune import metrics as M


def test_hand_worked_values():
    # 2 classes: tp=2 (1->1), tn=1, fp=1, fn=1.
    predictions = np.array([1, 1, 0, 1, 0])
    references = np.array([1, 1, 0, 0, 1])
    assert M.accuracy(predictions, references) == pytest.approx(3 / 5)
    # F1(class 1) = 2*2/(2*2+1+1) = 2/3; F1(class 0) = 2*1/(2*1+1+1) = 1/2.
    assert M.macro_f1(predictions, references) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2) = 1/6.
    assert M.matthews_correlation(predictions, references) == pytest.approx(1 / 6)
    # Spearman on tied ranks: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) -> pearson of those = 0.9486833.
    assert M.spearmanr([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.spearmanr([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert M.spearmanr([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_degenerate_inputs_are_zero_not_nan():
    assert M.pearson([1, 1, 1], [1, 2, 3]) == 0.0
    assert M.matthews_correlation(np.array([1, 1]), np.array([1, 1])) == 0.0
    with pytest.raises(ValueError):
        M.matthews_correlation(np.array([0, 1, 2]), np.array([0, 1, 2]))


def test_multi_label_hand_worked():
    logits = np.array([[2.0, -1.0, 3.0], [-2.0, 1.0, -1.0]])  # predicted {0, 2}, {1}
    labels = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # true {0, 2}, {2}
    m = M.multi_label_metrics(logits, labels)
    assert m["exact_match"] == pytest.approx(0.5)
    # micro: tp=2, fp=1, fn=1 -> 4/6. macro: label0 1, label1 0 (fp only), label2 2/3.
    assert m["f1_micro"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx((1 + 0 + 2 / 3) / 3)


def test_metric_names_match_what_is_computed():
    rng = np.random.default_rng(0)
    for problem_type, num_labels, labels in [
        (M.SINGLE_LABEL, 2, rng.integers(0, 2, 20)),
        (M.SINGLE_LABEL, 3, rng.integers(0, 3, 20)),
        (M.MULTI_LABEL, 4, rng.integers(0, 2, (20, 4)).astype(float)),
        (M.REGRESSION, 1, rng.normal(size=20)),
    ]:
        logits = rng.normal(size=(20, num_labels))

        class Prediction:
            predictions, label_ids = logits, labels

        got = M.build_compute_metrics(problem_type, num_labels)(Prediction())
        assert sorted(got) == sorted(M.metric_names(problem_type, num_labels))
        assert M.BEST_METRIC[problem_type] in got


def test_best_metric():
    """--metric_for_best_model: the task's default, with or without `eval_`, and one clear error for another task's."""
    from finetune.train import pick_best_metric
    from minibert.cli import UserError

    assert pick_best_metric(None, M.SINGLE_LABEL, 2) == "accuracy"
    assert pick_best_metric("eval_f1", M.SINGLE_LABEL, 3) == "f1"
    assert pick_best_metric(None, M.MULTI_LABEL, 4) == "f1_micro"
    assert pick_best_metric("loss", M.REGRESSION, 1) == "loss"
    with pytest.raises(UserError, match="this task reports pearson, spearmanr, loss"):
        pick_best_metric("accuracy", M.REGRESSION, 1)
