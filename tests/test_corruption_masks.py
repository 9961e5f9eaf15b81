"""Missing-modality protocols: six patterns, per-sample random drop, IMDer's batch schedule."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from robustmer import MODALITIES
from robustmer.corruption.masks import (
    IMDER_MISS_ONE,
    IMDER_MISS_TWO,
    SIX_PATTERNS,
    achieved_missing_rate,
    drop_probability,
    expand_six_patterns,
    imder_batch_kept,
    imder_batch_schedule,
    imder_nominal_rate,
    max_missing_rate,
    present_to_torch,
    random_drop,
    random_pattern,
)

# --- six patterns ---------------------------------------------------------------------------------


def test_six_patterns_exact() -> None:
    assert list(SIX_PATTERNS) == ["azz", "zvz", "zzl", "avz", "azl", "zvl"]
    assert SIX_PATTERNS == {
        "azz": (True, False, False),
        "zvz": (False, True, False),
        "zzl": (False, False, True),
        "avz": (True, True, False),
        "azl": (True, False, True),
        "zvl": (False, True, True),
    }
    assert (True, True, True) not in SIX_PATTERNS.values()
    assert all(any(v) for v in SIX_PATTERNS.values())
    # Letters agree with the column order audio, video, text.
    letters = ("a", "v", "l")
    for name, vec in SIX_PATTERNS.items():
        assert tuple(ch == letters[j] for j, ch in enumerate(name)) == vec


def test_expand_six_patterns_rows() -> None:
    n = 5
    sample_index, names, present = expand_six_patterns(n)
    assert sample_index.dtype == np.int64
    assert present.dtype == bool
    assert sample_index.shape == names.shape == (6 * n,)
    assert present.shape == (6 * n, 3)
    pattern_list = list(SIX_PATTERNS)
    for i in range(6 * n):
        assert sample_index[i] == i // 6
        assert names[i] == pattern_list[i % 6]
        assert tuple(present[i]) == SIX_PATTERNS[pattern_list[i % 6]]
    assert not present.all(axis=1).any()
    assert present.any(axis=1).all()


def test_expand_six_patterns_empty() -> None:
    sample_index, names, present = expand_six_patterns(0)
    assert sample_index.shape == (0,) and names.shape == (0,) and present.shape == (0, 3)


def test_random_pattern_only_six() -> None:
    present = random_pattern(3000, np.random.default_rng(0))
    assert present.shape == (3000, 3)
    rows = {tuple(bool(v) for v in r) for r in present}
    assert rows == set(SIX_PATTERNS.values())
    # Uniform: each pattern about 1/6 of the rows.
    for vec in SIX_PATTERNS.values():
        frac = np.all(present == np.array(vec), axis=1).mean()
        assert abs(frac - 1 / 6) < 0.03


# --- per-sample random drop -----------------------------------------------------------------------


def test_max_missing_rate() -> None:
    assert max_missing_rate() == pytest.approx(2 / 3)
    assert max_missing_rate(2) == 0.5


@pytest.mark.parametrize(
    ("rate", "m"),
    [(r, m) for m in (2, 3, 4) for r in (0.05, 0.1, 0.3, 0.5, 0.6, 0.66) if r < (m - 1) / m],
)
def test_drop_probability_solves_equation(rate: float, m: int) -> None:
    p = drop_probability(rate, m)
    assert 0.0 < p < 1.0
    assert (p - p**m) / (1 - p**m) == pytest.approx(rate, abs=1e-10)
    # Rejection lowers the rate, so the raw drop probability must exceed the target.
    assert p > rate


def test_drop_probability_edges() -> None:
    assert drop_probability(0.0) == 0.0
    with pytest.raises(ValueError):
        drop_probability(2 / 3)
    with pytest.raises(ValueError):
        drop_probability(-0.1)


@pytest.mark.parametrize("rate", [round(0.1 * k, 1) for k in range(7)])
def test_random_drop_hits_target_rate(rate: float) -> None:
    present = random_drop(6000, rate, np.random.default_rng(123))
    assert present.shape == (6000, 3) and present.dtype == bool
    assert present.any(axis=1).all()
    assert abs(achieved_missing_rate(present) - rate) < 0.015


def test_random_drop_zero_is_complete() -> None:
    assert random_drop(50, 0.0, np.random.default_rng(0)).all()


def test_random_drop_deterministic() -> None:
    a = random_drop(500, 0.4, np.random.default_rng(7))
    b = random_drop(500, 0.4, np.random.default_rng(7))
    c = random_drop(500, 0.4, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("rate", [0.7, 1.0])
def test_random_drop_above_cap(rate: float) -> None:
    with pytest.warns(UserWarning, match="cap"):
        present = random_drop(3000, rate, np.random.default_rng(1))
    assert (present.sum(axis=1) == 1).all()
    assert achieved_missing_rate(present) == pytest.approx(2 / 3, abs=1e-12)
    # The kept modality is uniform over the three.
    assert np.all(np.abs(present.mean(axis=0) - 1 / 3) < 0.04)


def test_random_drop_below_cap_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        random_drop(100, 0.6, np.random.default_rng(0))


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan")])
def test_random_drop_invalid_rates(rate: float) -> None:
    with pytest.raises(ValueError):
        random_drop(10, rate, np.random.default_rng(0))


def test_achieved_missing_rate() -> None:
    present = np.array([[True, False, False], [True, True, True]])
    assert achieved_missing_rate(present) == pytest.approx(2 / 6)


# --- IMDer schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(7))
def test_imder_batch_kept_fractions(i: int) -> None:
    rate = (i + 1) / 10
    n_batches = 40
    kept = imder_batch_kept(n_batches, rate)
    assert kept.shape == (n_batches,)
    n_one = int((kept == 1).sum())
    n_two = int((kept == 2).sum())
    assert n_one == round(IMDER_MISS_TWO[i] * n_batches)
    assert n_two == round(IMDER_MISS_ONE[i] * n_batches)
    assert n_one / n_batches == pytest.approx(IMDER_MISS_TWO[i])
    assert n_two / n_batches == pytest.approx(IMDER_MISS_ONE[i])
    # Missing batches come first: kept counts never decrease along the loader order.
    assert np.all(np.diff(kept) >= 0)


def test_imder_rate_03_counts() -> None:
    kept = imder_batch_kept(40, 0.3)
    assert kept[:12].tolist() == [1] * 12
    assert kept[12:24].tolist() == [2] * 12
    assert kept[24:].tolist() == [3] * 16


def test_imder_nominal_rate() -> None:
    assert imder_nominal_rate(0.3) == pytest.approx(0.3)
    # The tables reproduce the nominal rate up to 0.6; at 0.7 every batch keeps one modality, so
    # the rate is capped at (M-1)/M = 2/3.
    for k in range(1, 7):
        assert imder_nominal_rate(k / 10) == pytest.approx(k / 10)
    assert imder_nominal_rate(0.7) == pytest.approx(2 / 3)
    assert imder_nominal_rate(0.0) == 0.0


def test_imder_mr0() -> None:
    assert (imder_batch_kept(40, 0.0) == 3).all()
    assert (imder_batch_kept(40, 0.0, released_mr0=True) == 1).all()


@pytest.mark.parametrize("rate", [0.05, 0.8, -0.1, 1.0])
def test_imder_invalid_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        imder_batch_kept(40, rate)


def test_imder_few_batches_no_division_by_zero() -> None:
    kept = imder_batch_kept(3, 0.5)
    assert kept.shape == (3,)
    assert set(kept.tolist()) <= {1, 2, 3}


def test_imder_batch_schedule() -> None:
    n, bs = 1000, 32
    present = imder_batch_schedule(n, bs, 0.5, np.random.default_rng(3))
    again = imder_batch_schedule(n, bs, 0.5, np.random.default_rng(3))
    np.testing.assert_array_equal(present, again)
    assert present.shape == (n, 3)
    assert present.any(axis=1).all()
    n_batches = -(-n // bs)
    kept = imder_batch_kept(n_batches, 0.5)
    for b in range(n_batches):
        block = present[b * bs : (b + 1) * bs]
        assert (block == block[0]).all()
        assert block[0].sum() == kept[b]
    # With 32 batches of one modality at this rate, more than one modality must have been chosen.
    singles = {tuple(present[b * bs]) for b in range(n_batches) if kept[b] == 1}
    assert len(singles) > 1


# --- torch ----------------------------------------------------------------------------------------


def test_present_to_torch() -> None:
    present = np.array([[True, False, True], [False, True, False]])
    out = present_to_torch(present, "cpu")
    assert list(out) == list(MODALITIES)
    assert out["audio"].dtype == torch.bool
    assert out["audio"].tolist() == [True, False]
    assert out["video"].tolist() == [False, True]
    assert out["text"].tolist() == [True, False]
    with pytest.raises(ValueError):
        present_to_torch(np.ones((2, 2), dtype=bool), "cpu")
