"""Metrics against values worked out by hand (and scikit-learn where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from robustmer.metrics import (
    METRIC_KEYS,
    REGRESSION_METRIC_KEYS,
    classification_metrics,
    confusion_matrix,
    mean_std,
    per_class_scores,
    regression_metrics,
    task_metric_keys,
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


# --- Sentiment regression (MMSA metricsTop) ---------------------------------------------------

R_TRUE = [-3.0, -1.5, 0.0, 0.5, 2.5, 3.0]
R_PRED = [-2.6, 0.2, 0.4, -0.1, 2.5, 1.4]
# Has-zero (all 6): truth >= 0 -> [F, F, T, T, T, T]; pred >= 0 -> [F, T, T, F, T, T]
#   agree at 0, 2, 4, 5 -> Acc-2 = 4/6. Confusion (rows truth neg/pos): [[1, 1], [1, 3]]
#   F1 neg: P 1/2, R 1/2 -> 1/2; F1 pos: P 3/4, R 3/4 -> 3/4
#   weighted F1 = (2 * 1/2 + 4 * 3/4) / 6 = 4/6
# Non-zero (drop sample 2, truth 0): truth > 0 -> [F, F, T, T, T]; pred > 0 -> [F, T, F, T, T]
#   agree at 0, 4, 5 -> Acc-2 = 3/5. Confusion: [[1, 1], [1, 2]]
#   F1 neg: 1/2; F1 pos: P 2/3, R 2/3 -> 2/3; weighted F1 = (2 * 1/2 + 3 * 2/3) / 5 = 3/5
# Acc-7 (clip [-3, 3], round half to even):
#   truth -> [-3, -2, 0, 0, 2, 3]   (-1.5 -> -2, 0.5 -> 0, 2.5 -> 2)
#   pred  -> [-3, 0, 0, -0, 2, 1]   (-0.1 -> -0.0, which equals 0.0)
#   agree at 0, 2, 3, 4 -> 4/6
# Acc-5 (clip [-2, 2]): truth [-2, -1.5, 0, 0.5, 2, 2] -> [-2, -2, 0, 0, 2, 2]
#   pred [-2, 0.2, 0.4, -0.1, 2, 1.4] -> [-2, 0, 0, -0, 2, 1]; agree at 0, 2, 3, 4 -> 4/6
# Acc-3 (clip [-1, 1]): truth -> [-1, -1, 0, 0, 1, 1]; pred -> [-1, 0, 0, -0, 1, 1] -> 5/6
# MAE: |0.4| + |1.7| + |0.4| + |-0.6| + 0 + |-1.6| = 4.7 -> 4.7 / 6
# Corr: means 1.5/6 = 0.25 and 1.8/6 = 0.3
#   dt = [-3.25, -1.75, -0.25, 0.25, 2.25, 2.75]; dp = [-2.9, -0.1, 0.1, -0.4, 2.2, 1.1]
#   sum dt*dp = 9.425 + 0.175 - 0.025 - 0.1 + 4.95 + 3.025 = 17.45
#   sum dt^2 = 26.375; sum dp^2 = 14.64 -> r = 17.45 / sqrt(26.375 * 14.64)
R_EXPECTED = {
    "acc2": 3 / 5,  # the non-zero pair under its headline name
    "f1": 3 / 5,
    "acc2_has0": 4 / 6,
    "f1_has0": 4 / 6,
    "acc2_non0": 3 / 5,
    "f1_non0": 3 / 5,
    "acc3": 5 / 6,
    "acc5": 4 / 6,
    "acc7": 4 / 6,
    "mae": 4.7 / 6,
    "corr": 17.45 / np.sqrt(26.375 * 14.64),
    "n_samples": 6,
    "n_nonzero": 5,
}


def test_regression_metrics_by_hand() -> None:
    got = regression_metrics(R_TRUE, R_PRED)
    assert set(got) == set(REGRESSION_METRIC_KEYS) | {"n_samples", "n_nonzero"}
    assert got == pytest.approx(R_EXPECTED, abs=1e-12)
    assert isinstance(got["n_samples"], int) and isinstance(got["n_nonzero"], int)


def test_regression_rounding_is_half_to_even() -> None:
    truth = [2.5, 0.5, 1.5, -2.5, 3.0, -3.7]
    pred = [2.4, -0.5, 2.4, -1.6, 4.2, -2.5]
    # Acc-7: truth -> [2, 0, 2, -2, 3, -3] (2.5 -> 2, 0.5 -> 0, 1.5 -> 2, -2.5 -> -2, -3.7 clips)
    #        pred  -> [2, -0, 2, -2, 3, -2] (-0.5 -> -0.0 == 0, 4.2 clips to 3, -2.5 -> -2)
    #   only the last pair differs -> 5/6 (half away from zero would give 3/6)
    # Acc-5: clip to [-2, 2] -> truth [2, 0, 2, -2, 2, -2], pred [2, -0, 2, -2, 2, -2] -> 1
    got = regression_metrics(truth, pred)
    assert got["acc7"] == pytest.approx(5 / 6)
    assert got["acc5"] == 1.0
    assert got["acc3"] == 1.0


def test_regression_clipping_per_scale() -> None:
    # truth 3 vs pred 2: Acc-7 rounds 3 vs 2 (differ); Acc-5 clips 3 -> 2 (equal); Acc-3 1 vs 1.
    # truth -3 vs pred -1.6: Acc-7 -3 vs -2; Acc-5 -2 vs -2; Acc-3 -1 vs -1.
    got = regression_metrics([3.0, -3.0], [2.0, -1.6])
    assert (got["acc7"], got["acc5"], got["acc3"]) == (0.0, 1.0, 1.0)
    # MAE is unclipped: (1 + 1.4) / 2
    assert got["mae"] == pytest.approx(1.2)


def test_regression_all_zero_truth() -> None:
    # No non-zero truth: the non-zero Acc-2/F1 are NaN; has-zero counts truth 0 as ">= 0".
    # Truth is constant, so Corr is 0.0 by definition (not NaN).
    got = regression_metrics([0.0, 0.0, 0.0], [0.5, -0.5, 0.0])
    assert np.isnan(got["acc2_non0"]) and np.isnan(got["f1_non0"])
    assert got["n_nonzero"] == 0
    # pred >= 0 -> [T, F, T] vs truth all T: Acc-2 2/3; only class "positive" occurs:
    # F1 pos: P 2/2, R 2/3 -> 0.8, support 3 -> weighted F1 = 0.8
    assert got["acc2_has0"] == pytest.approx(2 / 3)
    assert got["f1_has0"] == pytest.approx(0.8)
    assert got["corr"] == 0.0


def test_regression_constant_prediction_corr_is_zero() -> None:
    # Constant values whose mean is not exact in floating point still count as constant.
    got = regression_metrics([-1.0, 0.3, 2.0], [0.1, 0.1, 0.1])
    assert got["corr"] == 0.0
    assert regression_metrics([1.0], [2.0])["corr"] == 0.0


def test_regression_bad_inputs() -> None:
    with pytest.raises(ValueError, match="values but"):
        regression_metrics([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="no samples"):
        regression_metrics([], [])
    with pytest.raises(ValueError, match="y_true holds NaN"):
        regression_metrics([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="y_pred holds NaN or infinite"):
        regression_metrics([0.1, 0.2], [0.1, float("inf")])


def test_task_metric_keys() -> None:
    assert task_metric_keys("classification") == METRIC_KEYS
    assert task_metric_keys("regression") == REGRESSION_METRIC_KEYS
    with pytest.raises(ValueError, match="unknown task"):
        task_metric_keys("ranking")


def test_regression_agrees_with_sklearn_and_numpy() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        # MOSI-like labels: multiples of 1/3 in [-3, 3] plus some forced exact zeros;
        # the first predictions are exact halves to exercise half-to-even rounding.
        t = np.round(rng.uniform(-3, 3, 80) * 3) / 3
        t[rng.random(80) < 0.1] = 0.0
        p = np.clip(t + rng.normal(0, 1.0, 80), -3.5, 3.5)
        p[:5] = rng.integers(-7, 8, 5) / 2
        got = regression_metrics(t, p)
        assert got["n_nonzero"] == int(np.sum(t != 0))
        nz = t != 0
        assert got["acc2_has0"] == pytest.approx(sk.accuracy_score(t >= 0, p >= 0))
        assert got["f1_has0"] == pytest.approx(sk.f1_score(t >= 0, p >= 0, average="weighted"))
        assert got["acc2_non0"] == pytest.approx(sk.accuracy_score(t[nz] > 0, p[nz] > 0))
        assert got["f1_non0"] == pytest.approx(
            sk.f1_score(t[nz] > 0, p[nz] > 0, average="weighted")
        )
        for key, bound in (("acc3", 1), ("acc5", 2), ("acc7", 3)):
            want = sk.accuracy_score(
                np.round(np.clip(t, -bound, bound)).astype(int),
                np.round(np.clip(p, -bound, bound)).astype(int),
            )
            assert got[key] == pytest.approx(want)
        assert got["mae"] == pytest.approx(sk.mean_absolute_error(t, p))
        assert got["corr"] == pytest.approx(np.corrcoef(p, t)[0, 1])


def test_mean_std_over_regression_folds() -> None:
    folds = [regression_metrics(R_TRUE, R_PRED), regression_metrics(R_TRUE, R_TRUE)]
    mean, _ = mean_std(folds, keys=task_metric_keys("regression"))
    assert mean["acc7"] == pytest.approx((4 / 6 + 1) / 2)
    assert mean["mae"] == pytest.approx(4.7 / 12)
