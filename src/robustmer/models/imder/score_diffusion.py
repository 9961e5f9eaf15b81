"""Conditional score-based diffusion in IMDer's projected feature space.

Holds the VE SDE, the conditional 1-D U-Net score network, the denoising score-matching loss
and the samplers, re-implemented from the IMDer reference notes (no code copied).

The diffusion runs on the frozen `[B, 32, L']` temporal projections, not on raw features. The
condition is noised like the target: with the SAME z in training (`dsm_loss`), with fresh noise
at every step of the stochastic samplers, so the network always sees a condition whose noise
level matches t.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustmer.models.imder.mult import TransformerEncoder

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = ("euler_maruyama", "pc", "ode")
ODE_CONDITIONS = ("fixed", "fresh", "clean")
CONDITION_NOISE = ("same", "independent")


class VESDE:
    """Variance-exploding SDE `dx = sigma^t dw` on t in [0, 1].

    `marginal_std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma))`, `diffusion_coeff(t) = sigma^t`.
    """

    def __init__(self, sigma: float = 25.0):
        if sigma <= 1:
            raise ValueError(f"sigma must be > 1, got {sigma}")
        self.sigma = float(sigma)
        self.log_sigma = math.log(self.sigma)

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((torch.exp(2 * t * self.log_sigma) - 1) / (2 * self.log_sigma))

    def diffusion_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(t * self.log_sigma)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of t with FIXED frequencies (a buffer, saved, never trained)."""

    def __init__(self, embed_dim: int = 256, scale: float = 30.0):
        super().__init__()
        self.register_buffer("W", torch.randn(embed_dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        proj = t[:, None] * self.W[None, :].to(t.dtype) * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def _groups(channels: int, preferred: int) -> int:
    """GroupNorm groups: the spec's count when it divides the channels (always at width 32)."""
    return preferred if channels % preferred == 0 else math.gcd(preferred, channels)


class ScoreNet(nn.Module):
    """Conditional 1-D U-Net score model s(x, t, c) with cross-attention to c at every level.

    Widths `[c, 2c, 4c, 8c]` (`[32, 64, 128, 256]` at `channels=32`), about 3.46M parameters
    at the spec's size. Each level: conv -> + cross-attention(h, condition at that level) ->
    + Dense(time embedding) -> GroupNorm -> swish. The condition branch is a stride-2 conv chain
    down and a transposed-conv chain up (no skips); encoder levels attend to the down chain,
    decoder levels to the up chain. The output is divided by the marginal std of t, so the raw
    network predicts -z (the spec's DSM target times sigma(t)).
    """

    def __init__(
        self,
        channels: int = 32,
        embed_dim: int = 256,
        *,
        num_heads: int = 8,
        attn_layers: int = 2,
        sigma: float = 25.0,
        fourier_scale: float = 30.0,
    ):
        super().__init__()
        c = int(channels)
        w = (c, 2 * c, 4 * c, 8 * c)
        self.channels = c
        self.sde = VESDE(sigma)
        self.embed = nn.Sequential(
            GaussianFourierProjection(embed_dim, fourier_scale), nn.Linear(embed_dim, embed_dim)
        )

        def attn(width: int) -> TransformerEncoder:
            return TransformerEncoder(width, num_heads, attn_layers)  # dropout 0, causal

        # encoder
        self.conv1 = nn.Conv1d(c, w[0], 3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv1d(w[0], w[1], 3, stride=2, padding=1, bias=False)
        self.conv3 = nn.Conv1d(w[1], w[2], 3, stride=2, padding=1, bias=False)
        self.conv4 = nn.Conv1d(w[2], w[3], 3, stride=2, padding=1, bias=False)
        self.dense = nn.ModuleList(nn.Linear(embed_dim, n) for n in (*w, w[2], w[1], w[0]))
        self.gnorm = nn.ModuleList(
            [nn.GroupNorm(_groups(w[0], 4), w[0])]
            + [nn.GroupNorm(_groups(n, 32), n) for n in (w[1], w[2], w[3], w[2], w[1], w[0])]
        )
        self.attn = nn.ModuleList(attn(n) for n in (*w, w[2], w[1], w[0], c))
        # decoder
        self.tconv4 = nn.ConvTranspose1d(w[3], w[2], 3, 2, 1, output_padding=1, bias=False)
        self.tconv3 = nn.ConvTranspose1d(2 * w[2], w[1], 3, 2, 1, output_padding=1, bias=False)
        self.tconv2 = nn.ConvTranspose1d(2 * w[1], w[0], 3, 2, 1, output_padding=1, bias=False)
        self.tconv1 = nn.ConvTranspose1d(2 * w[0], c, 3, 1, 1)
        # condition branch
        self.cond_down = nn.ModuleList(
            nn.Conv1d(w[i], w[i + 1], 3, stride=2, padding=1) for i in range(3)
        )
        self.cond_up = nn.ModuleList(
            nn.ConvTranspose1d(w[i + 1], w[i], 3, 2, 1, output_padding=1) for i in (2, 1, 0)
        )

    def _level(self, i: int, h: torch.Tensor, cond: torch.Tensor, emb: torch.Tensor):
        """+ cross-attention, + time embedding, GroupNorm, swish (levels 0..6)."""
        h = self._cross(i, h, cond) + self.dense[i](emb)[:, :, None]
        return F.silu(self.gnorm[i](h))

    def _cross(self, i: int, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        attended = self.attn[i](h.permute(2, 0, 1), cond.permute(2, 0, 1))
        return h + attended.permute(1, 2, 0)

    def forward_unscaled(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor):
        """The raw U-Net output, before division by marginal_std(t)."""
        if x.shape[-1] % 8:
            raise ValueError(f"ScoreNet needs a length divisible by 8, got {x.shape[-1]}")
        if cond.shape != x.shape:
            raise ValueError(f"condition {tuple(cond.shape)} != x {tuple(x.shape)}")
        emb = F.silu(self.embed(t))
        c_down = [cond]
        for conv in self.cond_down:
            c_down.append(conv(c_down[-1]))
        c_up = [c_down[-1]]
        for conv in self.cond_up:
            c_up.append(conv(c_up[-1]))
        h1 = self._level(0, self.conv1(x), c_down[0], emb)
        h2 = self._level(1, self.conv2(h1), c_down[1], emb)
        h3 = self._level(2, self.conv3(h2), c_down[2], emb)
        h4 = self._level(3, self.conv4(h3), c_down[3], emb)
        h = self._level(4, self.tconv4(h4), c_up[1], emb)
        h = self._level(5, self.tconv3(torch.cat([h, h3], dim=1)), c_up[2], emb)
        h = self._level(6, self.tconv2(torch.cat([h, h2], dim=1)), c_up[3], emb)
        return self._cross(7, self.tconv1(torch.cat([h, h1], dim=1)), c_up[3])

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Score `[B, C, L']` of x at time t (`[B]`) given the condition (`[B, C, L']`)."""
        return self.forward_unscaled(x, t, cond) / self.sde.marginal_std(t)[:, None, None]


def dsm_loss(
    score_net: ScoreFn,
    x: torch.Tensor,
    cond: torch.Tensor,
    sde: VESDE,
    eps: float = 1e-5,
    *,
    condition_noise: str = "same",
) -> torch.Tensor:
    """Denoising score matching with the condition perturbed by the SAME z as the target.

    t ~ U(eps, 1) per sample, `x_t = x + std z`, `c_t = c + std z`; the loss is the batch mean
    of the per-sample SUM of `(std * s(x_t, t, c_t) + z)^2`. `condition_noise="independent"`
    perturbs the condition with its own z instead (see `IMDer` for why that matters).
    """
    t = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) * (1.0 - eps) + eps
    z = torch.randn_like(x)
    std = sde.marginal_std(t)[:, None, None]
    if condition_noise not in CONDITION_NOISE:
        raise ValueError(
            f"condition_noise must be one of {CONDITION_NOISE}, got {condition_noise!r}"
        )
    z_c = z if condition_noise == "same" else torch.randn_like(cond)
    score = score_net(x + std * z, t, cond + std * z_c)
    return ((score * std + z) ** 2).flatten(1).sum(dim=1).mean()


def _noisy(cond: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return cond + torch.randn_like(cond) * std[:, None, None]


@torch.no_grad()
def sample(
    score_net: ScoreFn,
    cond: torch.Tensor,
    sde: VESDE,
    steps: int = 100,
    method: str = "euler_maruyama",
    eps: float = 1e-3,
    *,
    snr: float = 0.16,
    ode_condition: str = "fixed",
) -> torch.Tensor:
    """Draw x ~ p(x | cond) (shape of cond) by reversing the SDE from t = 1 to eps.

    Noise comes from torch's global RNG, so `torch.manual_seed` makes a draw reproducible.

    - "euler_maruyama" (the released sampler): x ~ N(0, std(1)^2), t = linspace(1, eps, steps),
      fresh condition noise each step, returns the last noise-free mean. `steps` score calls.
    - "pc": each step one Langevin corrector step (step size from the per-sample gradient norm
      and `snr`), then the Euler-Maruyama predictor; returns the last predictor mean.
      2 * steps score calls.
    - "ode": probability-flow ODE `dx/dt = -0.5 g^2 s` with Heun's method on the same grid,
      2 * (steps - 1) score calls. `ode_condition="fixed"` (default) draws ONE condition noise
      z_c and uses `c + std(t) z_c` at every t: the condition stays on the noise level the net
      was trained on (clean conditions are out of distribution at large t), the trajectory is a
      deterministic function of (x_1, z_c), and the vector field is smooth in t, which Heun's
      second-order correction relies on (fresh noise per call would make it a random field).
      "fresh" and "clean" are kept for comparison.
    """
    if method not in METHODS:
        raise ValueError(f"unknown sampler {method!r}; expected one of {METHODS}")
    if ode_condition not in ODE_CONDITIONS:
        raise ValueError(f"ode_condition must be one of {ODE_CONDITIONS}, got {ode_condition!r}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    batch = cond.shape[0]
    ones = torch.ones(batch, device=cond.device, dtype=cond.dtype)
    times = torch.linspace(1.0, eps, steps, device=cond.device, dtype=cond.dtype)
    x = torch.randn_like(cond) * sde.marginal_std(ones)[:, None, None]
    if method == "ode":
        return _ode(score_net, cond, sde, times, x, ode_condition)
    dt = float(times[0] - times[1])
    x_mean = x
    for t in times:
        bt = ones * t
        std, g = sde.marginal_std(bt), sde.diffusion_coeff(bt)[:, None, None]
        c_t = _noisy(cond, std)
        if method == "pc":
            grad = score_net(x, bt, c_t)
            grad_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
            noise_norm = math.sqrt(x[0].numel())
            step = (2 * (snr * noise_norm / grad_norm) ** 2)[:, None, None]
            x = x + step * grad + torch.sqrt(2 * step) * torch.randn_like(x)
        x_mean = x + g**2 * score_net(x, bt, c_t) * dt
        x = x_mean + math.sqrt(dt) * g * torch.randn_like(x)
    return x_mean


def _ode(
    score_net: ScoreFn,
    cond: torch.Tensor,
    sde: VESDE,
    times: torch.Tensor,
    x: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Heun integration of the probability-flow ODE over the time grid."""
    z_c = torch.randn_like(cond) if mode == "fixed" else None
    ones = torch.ones(cond.shape[0], device=cond.device, dtype=cond.dtype)

    def drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        bt = ones * t
        std = sde.marginal_std(bt)
        if mode == "fixed":
            c_t = cond + z_c * std[:, None, None]
        elif mode == "fresh":
            c_t = _noisy(cond, std)
        else:
            c_t = cond
        return -0.5 * sde.diffusion_coeff(bt)[:, None, None] ** 2 * score_net(x, bt, c_t)

    for t0, t1 in itertools.pairwise(times):
        h = t1 - t0  # negative: integrating backwards in time
        d0 = drift(x, t0)
        x_euler = x + h * d0
        x = x + 0.5 * h * (d0 + drift(x_euler, t1))
    return x
