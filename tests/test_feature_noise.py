"""Diffusion-style feature noise: schedules against published checkpoints, noise kinds, masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustmer.corruption.feature_noise import (
    NOISE_KINDS,
    SCHEDULES,
    NoiseSchedule,
    add_noise,
    draw_eps,
    draw_timesteps,
    mask_noise,
    noise_sample,
    schedule,
)
from robustmer.errors import ConfigError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- schedules ------------------------------------------------------------------------------------


def test_schedule_arrays() -> None:
    sched = schedule("nmer")
    assert sched == NoiseSchedule(0.01, 0.5, 100)
    betas = sched.betas()
    assert betas.dtype == np.float64 and betas.shape == (100,)
    assert betas[0] == pytest.approx(0.01) and betas[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(np.sqrt(betas), np.linspace(0.1, np.sqrt(0.5), 100))
    np.testing.assert_allclose(sched.alpha_bar(), np.cumprod(1 - betas))
    assert np.all(np.diff(sched.sqrt_alpha_bar()) < 0)


def test_nmer_checkpoints() -> None:
    sab = schedule("nmer").sqrt_alpha_bar()
    assert sab[0] == pytest.approx(0.995, abs=0.01)
    assert sab[20] == pytest.approx(0.75, abs=0.01)
    assert sab[30] == pytest.approx(0.53, abs=0.01)
    assert sab[50] == pytest.approx(0.14, abs=0.01)
    assert np.all(sab[75:] < 0.005)


@pytest.mark.parametrize(
    ("steps", "mean"), [(20, 0.61), (40, 0.48), (60, 0.41), (80, 0.36), (100, 0.32)]
)
def test_nmer_intensity_means(steps: int, mean: float) -> None:
    sched = schedule("nmer", steps)
    assert sched.sqrt_alpha_bar().shape == (steps,)
    assert sched.mean_signal() == pytest.approx(mean, abs=0.01)


def test_semi_schedule() -> None:
    sched = schedule("semi")
    assert (sched.beta_start, sched.beta_end) == SCHEDULES["semi"]
    assert sched.mean_signal() == pytest.approx(0.67, abs=0.01)
    assert sched.sqrt_alpha_bar()[99] == pytest.approx(0.147, abs=0.005)


def test_unknown_schedule_lists_known() -> None:
    with pytest.raises(ConfigError, match="nmer"):
        schedule("cosine")


def test_invalid_schedule_params() -> None:
    with pytest.raises(ConfigError):
        NoiseSchedule(0.01, 0.5, 0)
    with pytest.raises(ConfigError):
        NoiseSchedule(0.5, 0.01, 10)


def test_cached_arrays_are_read_only() -> None:
    sched = schedule("nmer")
    with pytest.raises(ValueError):
        sched.betas()[0] = 1.0


# --- eps ------------------------------------------------------------------------------------------


def test_impulse_eps_values() -> None:
    eps = draw_eps((200, 100), "impulse", _gen(1))
    values = set(torch.unique(eps).tolist())
    assert values <= {-1.0, 0.0, 1.0}
    assert values == {-1.0, 0.0, 1.0}
    nonzero = (eps != 0).float().mean().item()
    assert nonzero == pytest.approx(0.3, abs=0.02)
    assert (eps == 1).sum().item() == pytest.approx((eps == -1).sum().item(), rel=0.1)


def test_gaussian_eps_stats() -> None:
    eps = draw_eps((100_000,), "gaussian", _gen(2))
    assert eps.dtype == torch.float32
    assert abs(eps.mean().item()) < 0.02
    assert eps.std().item() == pytest.approx(1.0, abs=0.02)


def test_draw_eps_dtype_and_unknown_kind() -> None:
    a = draw_eps((4, 3), "gaussian", _gen(5), dtype=torch.float64)
    b = draw_eps((4, 3), "gaussian", _gen(5))
    assert a.dtype == torch.float64
    torch.testing.assert_close(a.float(), b)
    assert set(NOISE_KINDS) == {"gaussian", "impulse"}
    with pytest.raises(ConfigError):
        draw_eps((2,), "salt", _gen())


# --- add_noise ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_add_noise_small_t_close(kind: str) -> None:
    sched = NoiseSchedule(0.0001, 0.5, 100)  # sqrt(alpha_bar[0]) ~ 0.99995
    x = torch.randn(64, 32, generator=_gen(10))
    out = add_noise(x, 0, sched, kind, _gen(11))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out, x, atol=0.05)
    assert not torch.equal(out, x)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_add_noise_large_t_independent(kind: str) -> None:
    sched = schedule("nmer")
    x = torch.randn(20_000, generator=_gen(20))
    out = add_noise(x, 99, sched, kind, _gen(21))
    corr = np.corrcoef(x.numpy(), out.numpy())[0, 1]
    assert abs(corr) < 0.05
    # At a mid step the signal is still visible.
    mid = add_noise(x, 20, sched, kind, _gen(21))
    assert np.corrcoef(x.numpy(), mid.numpy())[0, 1] > 0.5


def test_add_noise_formula() -> None:
    sched = schedule("nmer")
    x = torch.randn(8, 5, generator=_gen(30))
    out = add_noise(x, 20, sched, "gaussian", _gen(31))
    eps = draw_eps(x.shape, "gaussian", _gen(31))
    ab = sched.alpha_bar()[20]
    torch.testing.assert_close(out, float(np.sqrt(ab)) * x + float(np.sqrt(1 - ab)) * eps)


def test_add_noise_per_sample_t() -> None:
    sched = schedule("nmer")
    x = torch.randn(3, 4, 6, generator=_gen(40))
    t = torch.tensor([0, 50, 99])
    out = add_noise(x, t, sched, "gaussian", _gen(41))
    eps = draw_eps(x.shape, "gaussian", _gen(41))
    ab = sched.alpha_bar()
    for i, step in enumerate(t.tolist()):
        expected = float(np.sqrt(ab[step])) * x[i] + float(np.sqrt(1 - ab[step])) * eps[i]
        torch.testing.assert_close(out[i], expected)
    with pytest.raises(ValueError):
        add_noise(x, torch.tensor([0, 1]), sched, "gaussian", _gen())
    with pytest.raises(ValueError):
        add_noise(x, torch.tensor([0, 1, 100]), sched, "gaussian", _gen())


def test_add_noise_out_of_range_t() -> None:
    with pytest.raises(ValueError):
        add_noise(torch.zeros(2, 2), 100, schedule("nmer"), "gaussian", _gen())
    with pytest.raises(ValueError):
        add_noise(torch.zeros(2, 2), -1, schedule("nmer"), "gaussian", _gen())


def test_add_noise_does_not_modify_input() -> None:
    x = torch.randn(5, 5, generator=_gen(50))
    before = x.clone()
    add_noise(x, 10, schedule("nmer"), "impulse", _gen(51))
    assert torch.equal(x, before)


# --- noise_sample / timesteps ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16,), (7, 16)])
def test_noise_sample_deterministic(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    sched = schedule("nmer")
    a = noise_sample(x, 30, sched, "gaussian", seed=123)
    b = noise_sample(x, 30, sched, "gaussian", seed=123)
    c = noise_sample(x, 30, sched, "gaussian", seed=124)
    assert a.dtype == np.float32 and a.shape == shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, x)


def test_noise_sample_rejects_3d() -> None:
    with pytest.raises(ValueError):
        noise_sample(np.zeros((2, 3, 4), np.float32), 1, schedule("nmer"), "gaussian", 0)


def test_draw_timesteps() -> None:
    t = draw_timesteps(5000, 40, np.random.default_rng(0))
    assert t.dtype == np.int64 and t.shape == (5000,)
    assert t.min() == 0 and t.max() == 39
    one = draw_timesteps(1, 100, np.random.default_rng(1))
    assert one.shape == (1,)
    np.testing.assert_array_equal(
        draw_timesteps(10, 100, np.random.default_rng(2)),
        draw_timesteps(10, 100, np.random.default_rng(2)),
    )


# --- mask_noise -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_mask_noise(kind: str) -> None:
    x = torch.randn(6, 4, 8, generator=_gen(60))
    present = torch.tensor([True, False, True, False, False, True])
    out = mask_noise(x, present, 50, schedule("nmer"), kind, _gen(61))
    assert out.shape == x.shape
    for i, keep in enumerate(present.tolist()):
        if keep:
            assert torch.equal(out[i], x[i])
        else:
            assert not torch.allclose(out[i], x[i])
    # Missing rows equal the unmasked noisy tensor (the stream does not depend on the mask).
    full = add_noise(x, 50, schedule("nmer"), kind, _gen(61))
    assert torch.equal(out[~present], full[~present])


def test_mask_noise_shape_check() -> None:
    with pytest.raises(ValueError):
        mask_noise(torch.zeros(3, 2), torch.tensor([True]), 1, schedule("nmer"), "gaussian", _gen())
