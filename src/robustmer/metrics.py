"""Classification and regression metrics for emotion recognition, with explicit definitions.

The emotion-recognition literature reports the same few numbers under different names:

- WA (weighted accuracy) is plain accuracy: correct predictions / all predictions.
- UA (unweighted accuracy) is the mean per-class recall (balanced accuracy), averaged over the
  classes that occur in `y_true`; a class absent from the test labels has no recall to average.
- Weighted F1 (WAF in MER2023/2024) is the per-class F1 averaged with weights = support in
  `y_true`.
- Macro F1 is the unweighted mean of per-class F1 over the classes that occur in `y_true` OR in
  `y_pred` (the same set scikit-learn uses when no `labels` are passed); a class that is only
  predicted, never true, counts with F1 = 0.

F1 of a class is 2PR / (P + R), and 0 where P + R = 0 (undefined precision or recall counts as 0),
again matching scikit-learn's `zero_division=0`. No scikit-learn at run time: the pipeline only
needs these few lines, and the tests check them against hand-computed values.

Sentiment regression (CMU-MOSI/MOSEI, labels in [-3, 3]) follows MMSA's `metricsTop`, so numbers
are comparable with the papers that use it:

- Acc-2 / F1 come in two versions. "has-zero" (`acc2_has0`, `f1_has0`) uses every sample and
  compares `pred >= 0` with `truth >= 0`; "non-zero" (`acc2_non0`, `f1_non0`) drops samples whose
  truth is exactly 0 and compares `pred > 0` with `truth > 0`. F1 is the support-weighted F1 over
  the two classes (negative, positive), computed with `per_class_scores` above. With no non-zero
  truth the non-zero pair is NaN rather than an error, so the other metrics are still reported.
- Acc-7 / Acc-5 / Acc-3 clip both sides to [-3, 3] / [-2, 2] / [-1, 1] and compare the values
  rounded with numpy's round-half-to-even (banker's rounding: 2.5 -> 2, 1.5 -> 2, -0.5 -> -0.0,
  which equals 0.0), as MMSA does; half-away-from-zero would give different numbers.
- MAE is the mean absolute error on the unclipped values; Corr is Pearson's r, defined here as 0.0
  when either side is constant (r is undefined there; numpy would warn and return NaN).
- `acc2` / `f1` are the non-zero pair again under the names the MOSI/MOSEI tables use for
  Acc-2 / F1 (MMSA's headline numbers), so model selection and reports can ask for them plainly.

MER2023 (`task: classification_valence`: the class and the valence of each utterance) adds
`valence_mse`, the mean squared error of the predicted valence over the samples whose valence is
known, and the challenge's combined score `mer2023_score = weighted_f1 - 0.25 * valence_mse`
(WAF - 0.25 MSE; ../shared/spec/mer2024.md, "Metrics").

Model selection (`train.selection_metric`) picks the best epoch by one of these on validation;
`loss` is the validation task loss (cross-entropy or L1). MAE and loss are lower-is-better,
everything else higher-is-better (`higher_is_better`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_KEYS = ("wa", "ua", "weighted_f1", "macro_f1")
REGRESSION_METRIC_KEYS = (
    "acc2",
    "f1",
    "acc2_has0",
    "f1_has0",
    "acc2_non0",
    "f1_non0",
    "acc3",
    "acc5",
    "acc7",
    "mae",
    "corr",
)
VALENCE_METRIC_KEYS = ("valence_mse", "mer2023_score")
MER2023_VALENCE_WEIGHT = 0.25  # combined score: WAF - 0.25 * valence MSE
TASKS = ("classification", "regression", "classification_valence")
# What a task's robustness tables show when `report.metrics` names none of its metrics. The
# report groups metrics by `metric_task`: a classification_valence model shows its class
# metrics among the classifiers' and its valence metrics in a group of their own.
REPORT_DEFAULTS = {
    "classification": ("ua", "wa", "weighted_f1"),
    "regression": ("acc2", "f1", "acc7", "mae", "corr"),
    "classification_valence": VALENCE_METRIC_KEYS,
}
# Validation metrics a model of each task may be selected by (`loss`: the task loss).
SELECTION_METRICS = {
    "classification": (*METRIC_KEYS, "loss"),
    "regression": ("mae", "corr", "acc2", "f1", "acc7", "loss"),
    "classification_valence": (*METRIC_KEYS, *VALENCE_METRIC_KEYS, "loss"),
}
LOWER_IS_BETTER = frozenset({"mae", "loss", "valence_mse"})


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """`[n_classes, n_classes]` int64 counts; rows are true classes, columns predicted ones."""
    t, p = _as_labels(y_true, y_pred, n_classes)
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (t, p), 1)
    return counts


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
        "predicted": predicted.astype(np.int64),
    }


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], n_classes: int
) -> dict[str, float]:
    """WA, UA, weighted F1, macro F1 (definitions in the module docstring) and n_samples."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    return metrics_from_confusion(cm)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """The metrics of `classification_metrics`, computed from a confusion matrix."""
    cm = np.asarray(cm)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("no samples: metrics are undefined")
    scores = per_class_scores(cm)
    support, predicted = scores["support"], scores["predicted"]
    present_true = support > 0
    present_any = present_true | (predicted > 0)
    return {
        "wa": float(np.trace(cm) / n),
        "ua": float(scores["recall"][present_true].mean()),
        "weighted_f1": float((scores["f1"] * support).sum() / n),
        "macro_f1": float(scores["f1"][present_any].mean()),
        "n_samples": n,
    }


def valence_metrics(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    n_classes: int,
    valence_true: Sequence[float],
    valence_pred: Sequence[float],
) -> dict[str, float]:
    """The class metrics, `valence_mse` over the rows whose true valence is finite (NaN if none)
    and the MER2023 combined score (NaN with the MSE)."""
    out = classification_metrics(y_true, y_pred, n_classes)
    truth = np.asarray(valence_true, dtype=np.float64)
    known = np.isfinite(truth)
    errors = np.asarray(valence_pred, dtype=np.float64)[known] - truth[known]
    mse = float(np.mean(errors**2)) if known.any() else float("nan")
    out["valence_mse"] = mse
    out["mer2023_score"] = out["weighted_f1"] - MER2023_VALENCE_WEIGHT * mse
    out["n_valence"] = int(known.sum())
    return out


def mean_std(
    per_fold: Sequence[dict[str, float]], keys: Sequence[str] = METRIC_KEYS
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and population standard deviation (ddof=0) of each metric over folds."""
    mean = {k: float(np.mean([m[k] for m in per_fold])) for k in keys}
    std = {k: float(np.std([m[k] for m in per_fold])) for k in keys}
    return mean, std


def task_metric_keys(task: str) -> tuple[str, ...]:
    """Metric keys reported for a task type, so callers (e.g. `mean_std`) need not branch."""
    if task == "classification":
        return METRIC_KEYS
    if task == "regression":
        return REGRESSION_METRIC_KEYS
    if task == "classification_valence":
        return (*METRIC_KEYS, *VALENCE_METRIC_KEYS)
    raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")


def higher_is_better(metric: str) -> bool:
    """Direction of a metric for model selection: MAE and loss are errors, the rest scores."""
    return metric not in LOWER_IS_BETTER


def metric_task(metric: str) -> str:
    """The task a reported metric key belongs to (how the report groups models)."""
    if metric in VALENCE_METRIC_KEYS:
        return "classification_valence"
    return "regression" if metric in REGRESSION_METRIC_KEYS else "classification"


def rounded_scores(values: Sequence[float], bound: float = 3.0) -> np.ndarray:
    """Sentiment values clipped to [-bound, bound] and rounded half to even (Acc-7 classes)."""
    # np.round rounds halves to even, as MMSA's multiclass_acc does; + 0.0 turns -0.0 into 0.0.
    return np.round(np.clip(np.asarray(values, dtype=np.float64), -bound, bound)) + 0.0


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """MMSA-style sentiment-regression metrics (see the module docstring), n_samples, n_nonzero."""
    t, p = _as_values(y_true, y_pred)
    nonzero = t != 0
    acc2_has0, f1_has0 = _binary_acc_f1(t >= 0, p >= 0)
    if nonzero.any():
        acc2_non0, f1_non0 = _binary_acc_f1(t[nonzero] > 0, p[nonzero] > 0)
    else:
        acc2_non0 = f1_non0 = float("nan")
    return {
        "acc2": acc2_non0,
        "f1": f1_non0,
        "acc2_has0": acc2_has0,
        "f1_has0": f1_has0,
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "acc3": _rounded_accuracy(t, p, 1.0),
        "acc5": _rounded_accuracy(t, p, 2.0),
        "acc7": _rounded_accuracy(t, p, 3.0),
        "mae": float(np.mean(np.abs(p - t))),
        "corr": _pearson(t, p),
        "n_samples": int(t.size),
        "n_nonzero": int(nonzero.sum()),
    }


def _binary_acc_f1(truth_pos: np.ndarray, pred_pos: np.ndarray) -> tuple[float, float]:
    # Class 0 = negative, 1 = positive; reuse the module's one F1 implementation.
    cm = confusion_matrix(truth_pos.astype(np.int64), pred_pos.astype(np.int64), 2)
    m = metrics_from_confusion(cm)
    return m["wa"], m["weighted_f1"]


def _rounded_accuracy(t: np.ndarray, p: np.ndarray, bound: float) -> float:
    return float(np.mean(rounded_scores(t, bound) == rounded_scores(p, bound)))


def _pearson(t: np.ndarray, p: np.ndarray) -> float:
    # Exact-constancy check first: centring a constant float array can leave rounding noise.
    if np.all(t == t[0]) or np.all(p == p[0]):
        return 0.0
    dt, dp = t - t.mean(), p - p.mean()
    denom = np.sqrt(np.dot(dt, dt) * np.dot(dp, dp))
    if denom == 0:
        return 0.0
    return float(np.clip(np.dot(dt, dp) / denom, -1.0, 1.0))


def _as_values(y_true: Sequence[float], y_pred: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no samples: metrics are undefined")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} holds NaN or infinite values")
    return t, p


def _as_labels(
    y_true: Sequence[int], y_pred: Sequence[int], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} holds labels outside 0..{n_classes - 1}")
    return t, p
