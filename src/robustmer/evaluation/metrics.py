"""Classification metrics for emotion recognition, written out so their definitions are explicit.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_KEYS = ("wa", "ua", "weighted_f1", "macro_f1")


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


def mean_std(
    per_fold: Sequence[dict[str, float]], keys: Sequence[str] = METRIC_KEYS
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and population standard deviation (ddof=0) of each metric over folds."""
    mean = {k: float(np.mean([m[k] for m in per_fold])) for k in keys}
    std = {k: float(np.std([m[k] for m in per_fold])) for k in keys}
    return mean, std


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
