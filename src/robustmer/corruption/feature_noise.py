"""Diffusion-style feature noise: the forward process used by NMER and the MER2024-SEMI baseline.

``x_noisy = sqrt(alpha_bar[t]) * x + sqrt(1 - alpha_bar[t]) * eps`` with "scaled_linear" betas.
Noise is always drawn on CPU from an explicit generator so a given seed yields the same noisy
features on any device, and every model evaluated on a condition sees the identical input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from robustmer.errors import ConfigError

SCHEDULES: dict[str, tuple[float, float]] = {"nmer": (0.01, 0.5), "semi": (0.001, 0.1)}
"""(beta_start, beta_end) per published schedule; both use T = 100 by default."""

NOISE_KINDS = ("gaussian", "impulse")


@lru_cache(maxsize=64)
def _betas(beta_start: float, beta_end: float, num_steps: int) -> np.ndarray:
    betas = np.linspace(np.sqrt(beta_start), np.sqrt(beta_end), num_steps, dtype=np.float64) ** 2
    betas.setflags(write=False)
    return betas


@lru_cache(maxsize=64)
def _alpha_bar(beta_start: float, beta_end: float, num_steps: int) -> np.ndarray:
    alpha_bar = np.cumprod(1.0 - _betas(beta_start, beta_end, num_steps))
    alpha_bar.setflags(write=False)
    return alpha_bar


@dataclass(frozen=True)
class NoiseSchedule:
    """A "scaled_linear" beta schedule; arrays are cached and returned read-only."""

    beta_start: float
    beta_end: float
    num_steps: int

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ConfigError(f"noise schedule needs num_steps >= 1, got {self.num_steps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(
                "noise schedule needs 0 < beta_start <= beta_end < 1, got "
                f"beta_start={self.beta_start}, beta_end={self.beta_end}"
            )

    def betas(self) -> np.ndarray:
        return _betas(self.beta_start, self.beta_end, self.num_steps)

    def alpha_bar(self) -> np.ndarray:
        return _alpha_bar(self.beta_start, self.beta_end, self.num_steps)

    def sqrt_alpha_bar(self) -> np.ndarray:
        """Signal coefficient per step; the noise coefficient is sqrt(1 - alpha_bar)."""
        return np.sqrt(self.alpha_bar())

    def mean_signal(self) -> float:
        """Average signal coefficient over uniformly drawn t: how strong the noise is overall."""
        return float(self.sqrt_alpha_bar().mean())


def schedule(name: str, num_steps: int = 100) -> NoiseSchedule:
    """The named published schedule with ``num_steps`` points (NMER intensities use 20..100)."""
    try:
        beta_start, beta_end = SCHEDULES[name]
    except KeyError:
        raise ConfigError(
            f"unknown noise schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}"
        ) from None
    return NoiseSchedule(beta_start, beta_end, num_steps)


def draw_eps(
    shape: torch.Size | tuple[int, ...],
    kind: str,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Noise of ``kind``: N(0, I), or impulses (+-1 on about 30% of elements, 0 elsewhere).

    Drawn in float32 on CPU and then moved, so the values do not depend on device or dtype.
    """
    if kind == "gaussian":
        eps = torch.randn(shape, generator=generator, dtype=torch.float32)
    elif kind == "impulse":
        sign = torch.sign(torch.randn(shape, generator=generator, dtype=torch.float32))
        hit = torch.rand(shape, generator=generator, dtype=torch.float32) > 0.7
        eps = sign * hit.to(torch.float32)
    else:
        raise ConfigError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
    return eps.to(device=device, dtype=dtype)


def _coefficients(
    x: torch.Tensor, t: int | torch.Tensor, sched: NoiseSchedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise coefficients for ``t``, shaped to broadcast against ``x``."""
    sqrt_ab = torch.from_numpy(sched.sqrt_alpha_bar())
    sqrt_1m_ab = torch.from_numpy(np.sqrt(1.0 - sched.alpha_bar()))
    if isinstance(t, torch.Tensor) and t.ndim > 0:
        if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"per-sample t must be an integer tensor, got {t.dtype}")
        if x.ndim == 0 or t.shape != (x.shape[0],):
            raise ValueError(f"per-sample t must have shape [{x.shape[0]}], got {tuple(t.shape)}")
        idx = t.detach().to("cpu", torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= sched.num_steps):
            raise ValueError(f"t must be in [0, {sched.num_steps}), got {idx.tolist()}")
        view = (-1,) + (1,) * (x.ndim - 1)
        a, s = sqrt_ab[idx].view(view), sqrt_1m_ab[idx].view(view)
    else:
        step = int(t)
        if not 0 <= step < sched.num_steps:
            raise ValueError(f"t must be in [0, {sched.num_steps}), got {step}")
        a, s = sqrt_ab[step], sqrt_1m_ab[step]
    return a.to(x.device, x.dtype), s.to(x.device, x.dtype)


def add_noise(
    x: torch.Tensor,
    t: int | torch.Tensor,
    sched: NoiseSchedule,
    kind: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """Forward diffusion of ``x`` to step ``t`` (an int, or a long tensor [B] for per-sample t)."""
    if not x.is_floating_point():
        raise TypeError(f"add_noise needs a floating-point tensor, got {x.dtype}")
    a, s = _coefficients(x, t, sched)
    eps = draw_eps(x.shape, kind, generator, device=x.device, dtype=x.dtype)
    return a * x + s * eps


def noise_sample(x: np.ndarray, t: int, sched: NoiseSchedule, kind: str, seed: int) -> np.ndarray:
    """Deterministic noisy copy of one utterance's features (``[D]`` or ``[T_frames, D]``).

    A fresh generator seeded with ``seed`` makes the evaluation condition reproducible, so every
    model reading this feature sees the identical noisy input.
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim not in (1, 2):
        raise ValueError(f"features must be [D] or [T_frames, D], got shape {arr.shape}")
    generator = torch.Generator().manual_seed(int(seed))
    noisy = add_noise(torch.from_numpy(np.ascontiguousarray(arr)), int(t), sched, kind, generator)
    return noisy.numpy().astype(np.float32, copy=False)


def draw_timesteps(n: int, max_t: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` steps uniform in [0, max_t): n=1 for NMER's per-batch draw, n=B per sample."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_t < 1:
        raise ValueError(f"max_t must be >= 1, got {max_t}")
    return rng.integers(0, max_t, size=n, dtype=np.int64)


def mask_noise(
    x: torch.Tensor,
    present: torch.Tensor,
    t: int | torch.Tensor,
    sched: NoiseSchedule,
    kind: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """NMER's rule: rows (dim 0) whose modality is missing get noise, present rows stay clean.

    Noise is drawn for the whole tensor, so the random stream does not depend on the mask.
    """
    if present.shape != (x.shape[0],):
        raise ValueError(f"present must have shape [{x.shape[0]}], got {tuple(present.shape)}")
    noisy = add_noise(x, t, sched, kind, generator)
    keep = present.to(device=x.device, dtype=torch.bool).view((-1,) + (1,) * (x.ndim - 1))
    return torch.where(keep, x, noisy)
