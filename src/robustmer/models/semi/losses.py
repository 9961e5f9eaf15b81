"""Contrastive losses of MER2024-SEMI: NT-Xent, its learnable temperature and the contrast sums.

The released code's NT-Xent has a bug (its positives are each row's self-similarity, so it never
pulls one modality toward another). `nt_xent` is the intended SimCLR loss and the default;
`nt_xent_released` keeps the released behaviour as a named option for comparison only.

Modalities are always taken in the order audio, video, text (the paper's A, V, L).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

MODALITIES = ("audio", "video", "text")
MODALITY_TERMS = 6
"""Contrast terms of `modality_contrastive`: AV, AL, VL, A<->VL, V<->AL, L<->AV."""
NOISE_TERMS = len(MODALITIES)
"""Contrast terms of `noise_contrastive`: one clean-vs-noisy term per modality."""

TemperatureLike = Callable[[int], torch.Tensor] | torch.Tensor | float
ContrastLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | float], torch.Tensor]


def nt_xent(
    z_i: torch.Tensor, z_j: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """SimCLR's NT-Xent between two views `[N, d]` whose row k is a positive pair.

    Rows are L2-normalised (cosine similarity, so the scale of a feature cannot lower the loss),
    z = cat(z_i, z_j) is `[2N, d]`, logits are z z^T / tau with the self-similarity masked out,
    the positive of row k is row (k + N) mod 2N, and cross-entropy is averaged over all 2N rows.
    """
    if z_i.shape != z_j.shape or z_i.dim() != 2:
        raise ValueError(
            f"nt_xent needs two [N, d] views, got {tuple(z_i.shape)}, {tuple(z_j.shape)}"
        )
    n = z_i.shape[0]
    z = F.normalize(torch.cat([z_i, z_j], dim=0), dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return F.cross_entropy(sim, target)


def nt_xent_released(
    z_i: torch.Tensor, z_j: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """The released code's NT-Xent: a named option (`released_contrast=True`), NOT the default.

    Differences from `nt_xent`: no L2 normalisation (raw dot products), logits divided by tau
    TWICE (z z^T / tau / tau), no self-similarity mask, and the positive of row k is row k itself
    (the diagonal). The loss is therefore minimised by growing each row's own norm, and it does
    not pull z_i toward z_j.
    """
    if z_i.shape != z_j.shape or z_i.dim() != 2:
        raise ValueError(
            f"nt_xent_released needs two [N, d] views, got {tuple(z_i.shape)}, {tuple(z_j.shape)}"
        )
    z = torch.cat([z_i, z_j], dim=0)
    sim = z @ z.T / temperature / temperature
    return F.cross_entropy(sim, torch.arange(z.shape[0], device=z.device))


class Temperature(nn.Module):
    """Learnable contrast temperature(s); `temps(k)` is the temperature of contrast term k.

    Intended (default): ONE temperature shared by every term, initialised to `init` (0.1, the
    usual SimCLR range) and kept inside `bounds` (default [0.01, 1.0]) by a sigmoid bound
    tau = lo + (hi - lo) * sigmoid(raw). A hard clamp would have zero gradient once tau reaches
    a bound, so tau could never come back; the sigmoid keeps it in range and trainable.
    Released (`released=True`): nine independent raw temperatures initialised to 1.0, unclamped
    (terms 0..5 are the modality terms, 6..8 the noise terms), as in the released code.
    """

    def __init__(
        self,
        released: bool = False,
        init: float = 0.1,
        bounds: tuple[float, float] = (0.01, 1.0),
    ):
        super().__init__()
        self.released = bool(released)
        self.n_terms = MODALITY_TERMS + NOISE_TERMS
        lo, hi = float(bounds[0]), float(bounds[1])
        if self.released:
            self.tau = nn.Parameter(torch.ones(self.n_terms))
            return
        if not 0.0 < lo < init < hi:
            raise ValueError(f"temperature needs 0 < lo < init < hi, got {bounds=}, {init=}")
        self.lo, self.hi = lo, hi
        frac = (init - lo) / (hi - lo)
        self.raw = nn.Parameter(torch.tensor([math.log(frac / (1.0 - frac))]))

    def forward(self, term: int = 0) -> torch.Tensor:
        if not 0 <= term < self.n_terms:
            raise IndexError(f"contrast term must be in [0, {self.n_terms}), got {term}")
        if self.released:
            return self.tau[term]
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self.raw[0])


def _tau(temps: TemperatureLike, term: int) -> torch.Tensor | float:
    """A fixed temperature (float or tensor) as is, else the callable's value for `term`."""
    if isinstance(temps, float | int | torch.Tensor):
        return temps
    return temps(term)


def modality_contrastive(
    h: Mapping[str, torch.Tensor],
    proj: Mapping[str, nn.Module],
    loss: ContrastLoss = nt_xent,
    temps: TemperatureLike = 0.1,
) -> torch.Tensor:
    """Cross-modal contrast (AV + AL + VL + A<->VL + V<->AL + L<->AV) / 6 on hidden `[B, H]`.

    Pair terms compare the H-d features directly. A one-vs-two term such as A<->VL compares
    proj["audio"](h["audio"]) (H -> 2H, the released linearA1) with cat(h["video"], h["text"]),
    so each modality is also pulled toward the joint feature of the other two. Terms use
    temperatures 0..5 of `temps` in that order.
    """
    a, v, t = (h[m] for m in MODALITIES)
    terms = [
        loss(a, v, _tau(temps, 0)),
        loss(a, t, _tau(temps, 1)),
        loss(v, t, _tau(temps, 2)),
        loss(proj["audio"](a), torch.cat([v, t], dim=1), _tau(temps, 3)),
        loss(proj["video"](v), torch.cat([a, t], dim=1), _tau(temps, 4)),
        loss(proj["text"](t), torch.cat([a, v], dim=1), _tau(temps, 5)),
    ]
    return torch.stack(terms).mean()


def noise_contrastive(
    clean: Mapping[str, torch.Tensor],
    noisy: Mapping[str, torch.Tensor],
    loss: ContrastLoss = nt_xent,
    temps: TemperatureLike = 0.1,
) -> torch.Tensor:
    """Mean over modalities of the contrast between the clean and the noisy view of each sample.

    Pretraining only: it makes each modality's feature robust to the mild SEMI feature noise.
    Terms use temperatures 6..8 of `temps` (audio, video, text).
    """
    terms = [
        loss(clean[m], noisy[m], _tau(temps, MODALITY_TERMS + k)) for k, m in enumerate(MODALITIES)
    ]
    return torch.stack(terms).mean()
