"""Self-training helpers of MER2024-SEMI: confident pseudo-labels, thresholds, class oversampling.

Plain numpy on predicted probabilities `[N, C]` (softmax of the voted logits), so selection can
be checked and reproduced without a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _check_probs(probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    th = np.asarray(thresholds, dtype=np.float64)
    if p.ndim != 2 or th.shape != (p.shape[1],):
        raise ValueError(f"need probs [N, C] and thresholds [C], got {p.shape} and {th.shape}")
    return p, th


def select_confident(probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels) of the rows whose top probability is >= its predicted class's threshold.

    Rows are sorted ascending; labels are the argmax classes of those rows. The comparison is
    inclusive, so a probability exactly at the threshold is kept.
    """
    p, th = _check_probs(probs, thresholds)
    pred = p.argmax(axis=1)
    conf = p[np.arange(p.shape[0]), pred]
    rows = np.flatnonzero(conf >= th[pred])
    return rows, pred[rows]


def class_thresholds(
    classes: Sequence[str], thresholds: Mapping[str, float], default: float
) -> np.ndarray:
    """Per-class threshold vector in `classes` order; classes not in `thresholds` get `default`.

    A name in `thresholds` that is not a class raises, so a typo cannot silently fall back to
    the default (the paper: 0.99 for happy/neutral/angry/sad, 0.85 for worried/surprise).
    """
    unknown = sorted(set(thresholds) - set(classes))
    if unknown:
        raise ValueError(f"thresholds for unknown classes {unknown}; classes are {list(classes)}")
    return np.array([float(thresholds.get(c, default)) for c in classes], dtype=np.float64)


def adaptive_thresholds(
    probs: np.ndarray,
    base: np.ndarray,
    warmup: bool = True,
    min_threshold: float = 0.5,
) -> np.ndarray:
    """FlexMatch-style curriculum thresholds: classes the model learns slowly get lower ones.

    sigma_c counts rows predicted as c with confidence >= base_c. beta_c = sigma_c / max(max_c
    sigma_c, n_unused) with warmup (n_unused = rows confident for no class), else sigma_c /
    max_c sigma_c; threshold_c = beta_c / (2 - beta_c) * base_c (FlexMatch's convex mapping).
    Where FlexMatch would give 0 (no confident rows at all, beta = 0) and so keep every row,
    this floors each threshold at min(min_threshold, base_c): near-uniform predictions are never
    kept, and a threshold never exceeds its base.
    """
    p, th = _check_probs(probs, base)
    pred = p.argmax(axis=1)
    conf = p[np.arange(p.shape[0]), pred]
    confident = conf >= th[pred]
    sigma = np.bincount(pred[confident], minlength=p.shape[1]).astype(np.float64)
    denom = float(sigma.max(initial=0.0))
    if warmup:
        denom = max(denom, float(p.shape[0] - confident.sum()))
    beta = sigma / denom if denom > 0 else np.zeros_like(sigma)
    scaled = beta / (2.0 - beta) * th
    return np.maximum(scaled, np.minimum(min_threshold, th))


def oversample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices that balance `labels`: every row once, plus minority rows drawn with replacement.

    Each class present ends with exactly the count of the largest class. The extra rows are
    drawn from `rng` (reproducible for a seed); the result is SORTED, so it is a multiset of
    rows and the data loader does the shuffling.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    classes, counts = np.unique(y, return_counts=True)
    target = int(counts.max(initial=0))
    parts = [np.arange(y.shape[0])]
    for c, n in zip(classes, counts, strict=True):
        if n < target:
            parts.append(rng.choice(np.flatnonzero(y == c), size=target - int(n), replace=True))
    return np.sort(np.concatenate(parts))
