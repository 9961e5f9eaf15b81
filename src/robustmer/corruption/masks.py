"""Missing-modality protocols as "present" masks.

A present mask is a bool array ``[n_rows, 3]`` whose columns follow ``MODALITIES`` (audio, video,
text); True means the modality is available. Each protocol from the literature is reproduced
exactly so results stay comparable with the papers that used it:

* MMIN/NMER six patterns: the test set is expanded 6x, one row per (sample, pattern); training
  draws one of the six patterns per sample.
* Per-sample random drop (MMSA-style benchmarks): modalities dropped independently at a rate,
  always keeping at least one.
* IMDer's released per-batch schedule: whole batches lose one or two modalities, and the missing
  batches come first in every epoch.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from robustmer import MODALITIES

if TYPE_CHECKING:
    import torch

# Letters: a = audio, v = video, l = language (text), z = missing. No full-modality pattern.
SIX_PATTERNS: dict[str, tuple[bool, bool, bool]] = {
    "azz": (True, False, False),
    "zvz": (False, True, False),
    "zzl": (False, False, True),
    "avz": (True, True, False),
    "azl": (True, False, True),
    "zvl": (False, True, True),
}

_PATTERN_NAMES = tuple(SIX_PATTERNS)
_PATTERN_MATRIX = np.array([SIX_PATTERNS[name] for name in _PATTERN_NAMES], dtype=bool)

# IMDer's released schedule, indexed by int(rate * 10) - 1 for rate 0.1 .. 0.7.
IMDER_MISS_TWO = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
"""Fraction of batches that keep ONE modality (i.e. lose two)."""
IMDER_MISS_ONE = (0.1, 0.2, 0.3, 0.2, 0.1, 0.0, 0.0)
"""Fraction of batches that lose one modality (keep two)."""


def _check_n(n: int, name: str = "n") -> None:
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")


# --- MMIN / NMER six patterns -------------------------------------------------------------------


def expand_six_patterns(n_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MMIN/NMER test protocol: every sample is evaluated under each of the six patterns.

    Row ``i`` is sample ``i // 6`` under pattern ``i % 6`` (in ``SIX_PATTERNS`` order).
    Returns ``(sample_index int64 [6n], pattern_names object [6n], present bool [6n, 3])``.
    """
    _check_n(n_samples, "n_samples")
    n_patterns = len(_PATTERN_NAMES)
    rows = np.arange(n_samples * n_patterns, dtype=np.int64)
    sample_index = rows // n_patterns
    pattern_index = rows % n_patterns
    names = np.array(_PATTERN_NAMES, dtype=object)[pattern_index]
    present = _PATTERN_MATRIX[pattern_index].copy()
    return sample_index, names, present


def random_pattern(n: int, rng: np.random.Generator) -> np.ndarray:
    """The NMER training protocol: one of the six patterns drawn uniformly per sample."""
    _check_n(n)
    idx = rng.integers(0, len(_PATTERN_NAMES), size=n)
    return _PATTERN_MATRIX[idx].copy()


# --- per-sample random drop ---------------------------------------------------------------------


def max_missing_rate(n_modalities: int = 3) -> float:
    """The highest rate reachable while every sample keeps at least one modality: (M-1)/M."""
    if n_modalities < 1:
        raise ValueError(f"n_modalities must be >= 1, got {n_modalities}")
    return (n_modalities - 1) / n_modalities


def _conditional_rate(p: float, m: int) -> float:
    """Expected dropped fraction given that not every modality was dropped."""
    pm = p**m
    return (p - pm) / (1.0 - pm)


def drop_probability(rate: float, n_modalities: int = 3) -> float:
    """Per-(sample, modality) drop probability whose rate, after rejecting all-dropped rows, is
    ``rate``.

    Rejecting rows with nothing kept lowers the achieved rate below the raw drop probability, so
    the probability is solved from ``(p - p^M) / (1 - p^M) = rate`` (monotone in p; bisection).
    """
    cap = max_missing_rate(n_modalities)
    if not 0.0 <= rate < cap:
        raise ValueError(
            f"rate must be in [0, {cap:.4f}) for {n_modalities} modalities, got {rate}"
        )
    if rate == 0.0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _conditional_rate(mid, n_modalities) < rate:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def random_drop(n: int, rate: float, rng: np.random.Generator, n_modalities: int = 3) -> np.ndarray:
    """Per-sample random drop (MMSA-style): modalities dropped independently, >= 1 always kept.

    Rows where everything was dropped are redrawn until one survives, which is why the drop
    probability comes from :func:`drop_probability`. At or above the cap (M-1)/M every sample
    keeps exactly one modality, drawn uniformly, and a warning reports the achieved rate.
    """
    _check_n(n)
    if not 0.0 <= rate <= 1.0 or math.isnan(rate):
        raise ValueError(f"missing rate must be in [0, 1], got {rate}")
    cap = max_missing_rate(n_modalities)
    if rate == 0.0:
        return np.ones((n, n_modalities), dtype=bool)
    if rate >= cap:
        warnings.warn(
            f"requested missing rate {rate} is at or above the cap for {n_modalities} modalities "
            f"(at least one is always kept); the achieved rate is (M-1)/M = {cap:.4f}",
            stacklevel=2,
        )
        present = np.zeros((n, n_modalities), dtype=bool)
        present[np.arange(n), rng.integers(0, n_modalities, size=n)] = True
        return present
    p = drop_probability(rate, n_modalities)
    present = rng.random((n, n_modalities)) >= p
    empty = ~present.any(axis=1)
    while empty.any():
        redraw = np.flatnonzero(empty)
        present[redraw] = rng.random((redraw.size, n_modalities)) >= p
        empty = ~present.any(axis=1)
    return present


def achieved_missing_rate(present: np.ndarray) -> float:
    """Fraction of (sample, modality) slots that are missing."""
    present = np.asarray(present, dtype=bool)
    if present.size == 0:
        return 0.0
    return float(1.0 - present.mean())


# --- IMDer released per-batch schedule ----------------------------------------------------------


def _imder_index(rate: float) -> int:
    """Table index ``int(rate*10) - 1`` (rounded so 0.3 is not read as 0.2999...)."""
    tenths = round(rate * 10)
    if abs(rate * 10 - tenths) > 1e-6 or not 0 <= tenths <= 7:
        raise ValueError(f"IMDer missing rate must be a multiple of 0.1 in [0, 0.7], got {rate}")
    return int(tenths) - 1


def imder_batch_kept(n_batches: int, rate: float, released_mr0: bool = False) -> np.ndarray:
    """Number of modalities kept (1, 2 or 3) per batch, in loader order, as IMDer's code does.

    Counters are compared against ``D = round(n_batches / 10) * 10``, so the first batches of
    every epoch are the missing ones. ``D`` is floored at 10 here, because the released code
    divides by zero for fewer than 5 batches. For rate 0 the released code indexes the tables at
    -1 and every batch keeps one modality; ``released_mr0=True`` reproduces that, the default
    keeps all batches complete.
    """
    _check_n(n_batches, "n_batches")
    i = _imder_index(rate)
    if i < 0 and not released_mr0:
        return np.full(n_batches, 3, dtype=np.int64)
    denom = max(round(n_batches / 10) * 10, 10)
    miss_two = miss_one = 0
    kept = np.empty(n_batches, dtype=np.int64)
    for b in range(n_batches):
        if miss_two / denom < IMDER_MISS_TWO[i]:
            kept[b] = 1
            miss_two += 1
        elif miss_one / denom < IMDER_MISS_ONE[i]:
            kept[b] = 2
            miss_one += 1
        else:
            kept[b] = 3
    return kept


def imder_nominal_rate(rate: float) -> float:
    """The missing rate IMDer's tables imply: (2 * miss_two + miss_one) / 3."""
    i = _imder_index(rate)
    if i < 0:
        return 0.0
    return (2 * IMDER_MISS_TWO[i] + IMDER_MISS_ONE[i]) / 3


def imder_batch_schedule(
    n_samples: int,
    batch_size: int,
    rate: float,
    rng: np.random.Generator,
    released_mr0: bool = False,
) -> np.ndarray:
    """Present mask [n_samples, 3] for samples in loader order under IMDer's batch schedule.

    Which modalities survive is drawn once per incomplete batch (``rng.choice(3, kept,
    replace=False)``, like ``random.sample([0, 1, 2], k)``) and shared by all its samples;
    complete batches consume no random numbers.
    """
    _check_n(n_samples, "n_samples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_mod = len(MODALITIES)
    n_batches = -(-n_samples // batch_size)
    kept = imder_batch_kept(n_batches, rate, released_mr0=released_mr0)
    present = np.ones((n_samples, n_mod), dtype=bool)
    for b, k in enumerate(kept):
        if k >= n_mod:
            continue
        row = np.zeros(n_mod, dtype=bool)
        row[rng.choice(n_mod, size=int(k), replace=False)] = True
        present[b * batch_size : (b + 1) * batch_size] = row
    return present


# --- torch ----------------------------------------------------------------------------------------


def present_to_torch(present: np.ndarray, device: Any = None) -> dict[str, torch.Tensor]:
    """Split a present mask into one bool tensor [n] per modality, as the models consume it."""
    import torch

    present = np.asarray(present, dtype=bool)
    if present.ndim != 2 or present.shape[1] != len(MODALITIES):
        raise ValueError(f"present must have shape [n, {len(MODALITIES)}], got {present.shape}")
    return {
        name: torch.as_tensor(np.ascontiguousarray(present[:, j]), dtype=torch.bool, device=device)
        for j, name in enumerate(MODALITIES)
    }
