"""Metrics against values worked out by hand (and scikit-learn where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from robustmer.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    mean_std,
    per_class_scores,
)

# Four classes; class 3 is predicted once but never true.
Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 3, 1, 1, 2, 2, 0, 2]
# Confusion (rows = true, columns = predicted):
#   true 0: 2 x 0, 1 x 1, 1 x 3  -> [2, 1, 0, 1]
#   true 1: 2 x 1                -> [0, 2, 0, 0]
#   true 2: 1 x 0, 3 x 2         -> [1, 0, 3, 0]
#   true 3: none                 -> [0, 0, 0, 0]
CM = [[2, 1, 0, 1], [0, 2, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
# WA = (2 + 2 + 3) / 10 = 0.7
# recall: c0 2/4, c1 2/2, c2 3/4 (c3 has no support, not averaged) -> UA = 2.25 / 3 = 0.75
# precision: c0 2/3 (column 0 sums to 3), c1 2/3, c2 3/3, c3 0/1
# F1: c0 2*(2/3)(1/2)/(2/3+1/2) = 4/7; c1 2*(2/3)(1)/(5/3) = 4/5; c2 2*(1)(3/4)/(7/4) = 6/7; c3 0
# weighted F1 = (4*4/7 + 2*4/5 + 4*6/7 + 0*0) / 10 = (40/7 + 8/5) / 10 = 0.7314285714...
# macro F1 over classes in y_true or y_pred = {0,1,2,3}: (4/7 + 4/5 + 6/7 + 0) / 4 = 0.5571428571...
EXPECTED = {
    "wa": 0.7,
    "ua": 0.75,
    "weighted_f1": (40 / 7 + 8 / 5) / 10,
    "macro_f1": (4 / 7 + 4 / 5 + 6 / 7) / 4,
    "n_samples": 10,
}


def test_confusion_matrix_by_hand() -> None:
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 4), CM)


def test_metrics_by_hand() -> None:
    got = classification_metrics(Y_TRUE, Y_PRED, 4)
    assert got == pytest.approx(EXPECTED, abs=1e-12)


def test_per_class_scores_by_hand() -> None:
    scores = per_class_scores(np.array(CM))
    np.testing.assert_allclose(scores["precision"], [2 / 3, 2 / 3, 1, 0])
    np.testing.assert_allclose(scores["recall"], [0.5, 1, 0.75, 0])
    np.testing.assert_allclose(scores["f1"], [4 / 7, 4 / 5, 6 / 7, 0])
    np.testing.assert_array_equal(scores["support"], [4, 2, 4, 0])


def test_perfect_and_unused_classes() -> None:
    # A class absent from both y_true and y_pred changes neither UA nor macro F1.
    got = classification_metrics([0, 1, 1], [0, 1, 1], 5)
    assert got == {"wa": 1.0, "ua": 1.0, "weighted_f1": 1.0, "macro_f1": 1.0, "n_samples": 3}


def test_ua_differs_from_wa_on_imbalance() -> None:
    # 8 of class 0 all right, 2 of class 1 all wrong: WA 0.8, UA (1 + 0) / 2 = 0.5.
    got = classification_metrics([0] * 8 + [1] * 2, [0] * 10, 2)
    assert got["wa"] == pytest.approx(0.8)
    assert got["ua"] == pytest.approx(0.5)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="labels"):
        classification_metrics([0, 1], [0], 2)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics([], [], 2)


def test_mean_std_is_population_std() -> None:
    mean, std = mean_std([{"wa": 0.5}, {"wa": 0.7}], keys=("wa",))
    assert mean["wa"] == pytest.approx(0.6)
    assert std["wa"] == pytest.approx(0.1)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_agrees_with_sklearn_on_random_labels() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 5, 60)
        p = np.where(rng.random(60) < 0.5, t, rng.integers(0, 6, 60))
        got = classification_metrics(t, p, 6)
        assert got["wa"] == pytest.approx(sk.accuracy_score(t, p))
        assert got["ua"] == pytest.approx(sk.balanced_accuracy_score(t, p))
        assert got["weighted_f1"] == pytest.approx(
            sk.f1_score(t, p, average="weighted", zero_division=0)
        )
        assert got["macro_f1"] == pytest.approx(sk.f1_score(t, p, average="macro", zero_division=0))
