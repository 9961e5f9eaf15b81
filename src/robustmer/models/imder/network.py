"""IMDer (Wang, Li, Cui, NeurIPS 2023): incomplete multimodality-diffused emotion recognition.

Re-implemented from the IMDer reference notes (no code copied). A MulT backbone (`mult.py`) is
pretrained on complete data (MR = 0) and loaded with `IMDer.load_pretrained`, which freezes its
temporal projections. For each modality missing in a sample, a conditional score network
(`score_diffusion.py`) samples its projected feature `[32, L-2]` from the available ones, an
RCAN-style refinement network cleans it up, and MulT fuses the completed set.

Text is a pre-extracted feature sequence here (no BERT inside the model), so the paper's
"frozen text encoder" is the frozen text projection, like the audio and video ones.

Missing modalities are given PER SAMPLE (`present[m]` is a bool `[B]`), unlike the released
code's one pattern per batch. For each missing target modality the batch's samples missing it
are grouped by which of the other two they have: both -> a `Conv1d(64 -> 32, k=1)` on their
channel concat (one conv per target, i.e. per pair), one -> its projection. All samples missing
the target go through ONE score-net loss and ONE sampler call (the score net is shared across
patterns; the condition is a per-sample tensor).

Gradient routing, as the paper trains it: MulT and the head from the task loss; refinement
from task + reconstruction; score nets and condition convs from the DSM loss only (sampling
runs under no_grad); projections none after `load_pretrained`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from robustmer import MODALITIES
from robustmer.models.imder.mult import (
    Inputs,
    MulT,
    Present,
    check_seq_len,
    present_masks,
    zero_missing_projections,
)
from robustmer.models.imder.score_diffusion import (
    CONDITION_NOISE,
    METHODS,
    VESDE,
    ScoreNet,
    dsm_loss,
    sample,
)

__all__ = ["IMDer", "MulT", "Refinement", "count_parameters"]


class ChannelAttention(nn.Module):
    """Squeeze-excite over channels: avgpool -> 1x1 down -> ReLU -> 1x1 up -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, mid, 1),
            nn.ReLU(),
            nn.Conv1d(mid, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class RCAB(nn.Module):
    """Residual channel-attention block: conv3 -> ReLU -> conv3 -> channel attention, + x."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Refinement(nn.Module):
    """RCAN-style refinement of a sampled projection (about 0.52M parameters at 32 channels).

    1x1 conv up to 2C, one residual group (`blocks` RCABs + conv3, global residual), 1x1 conv
    back to C.
    """

    def __init__(self, channels: int = 32, blocks: int = 20, reduction: int = 16):
        super().__init__()
        hidden = 2 * channels
        self.head = nn.Conv1d(channels, hidden, 1)
        self.group = nn.Sequential(
            *(RCAB(hidden, reduction) for _ in range(blocks)),
            nn.Conv1d(hidden, hidden, 3, padding=1),
        )
        self.tail = nn.Conv1d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(h + self.group(h))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as the fixed Fourier frequencies excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class IMDer(nn.Module):
    """MulT + per-modality conditional score nets, refinement nets and pair-condition convs.

    `condition_noise="same"` (default) is the released DSM: the condition is perturbed with the
    target's z. That pairing leaks z (`c_t - x_t = c - x` is noise-free), so the net can lower
    the loss without learning p(x | c), and sampling (fresh condition noise) does not match
    training; `"independent"` draws a separate z for the condition, as the sampler does.

    `recovery=False` is the zero baseline/ablation: missing projections are zeroed and the
    score, refinement and condition nets (still built, so the flag can be flipped on a trained
    model) are not used. `sampler`, `steps` and `recovery` are plain attributes and may be
    changed between calls (e.g. fewer steps at evaluation). Inputs are brought to `seq_len`
    steps by `MulT.project` (aligned sequences, as in the released model).
    """

    handles_missing = True

    def __init__(
        self,
        input_dims: Mapping[str, int],
        n_outputs: int,
        *,
        seq_len: int = 50,
        proj_dim: int = 32,
        nlevels: int = 4,
        num_heads: int = 8,
        attn_dropout: float = 0.0,
        attn_dropout_a: float = 0.0,
        attn_dropout_v: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        out_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        sigma: float = 25.0,
        sampler: str = "euler_maruyama",
        steps: int = 100,
        score_weight: float = 0.1,
        recovery: bool = True,
        condition_noise: str = "same",
    ):
        super().__init__()
        check_seq_len(seq_len)
        if sampler not in METHODS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {METHODS}")
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        self.mult = MulT(
            input_dims, n_outputs, seq_len=seq_len, proj_dim=proj_dim, nlevels=nlevels,
            num_heads=num_heads, attn_dropout=attn_dropout, attn_dropout_a=attn_dropout_a,
            attn_dropout_v=attn_dropout_v, relu_dropout=relu_dropout, res_dropout=res_dropout,
            out_dropout=out_dropout, embed_dropout=embed_dropout,
        )  # fmt: skip
        self.sde = VESDE(sigma)
        self.sampler = sampler
        self.steps = int(steps)
        self.score_weight = float(score_weight)
        self.recovery = bool(recovery)
        if condition_noise not in CONDITION_NOISE:
            raise ValueError(
                f"condition_noise must be one of {CONDITION_NOISE}, got {condition_noise!r}"
            )
        self.condition_noise = condition_noise
        self.score = nn.ModuleDict({m: ScoreNet(proj_dim, sigma=sigma) for m in MODALITIES})
        self.refine = nn.ModuleDict({m: Refinement(proj_dim) for m in MODALITIES})
        # cond[m]: fuses the two OTHER modalities when both are there and m is missing
        self.cond = nn.ModuleDict({m: nn.Conv1d(2 * proj_dim, proj_dim, 1) for m in MODALITIES})

    def load_pretrained(self, mult_state: Mapping[str, torch.Tensor]) -> None:
        """Strict load of a pretrained MulT state dict, then freeze its temporal projections."""
        self.mult.load_state_dict(mult_state, strict=True)
        for param in self.mult.proj.parameters():
            param.requires_grad_(False)

    @staticmethod
    def others(target: str) -> tuple[str, str]:
        """The two modalities a missing `target` can be conditioned on (MODALITIES order)."""
        a, b = (m for m in MODALITIES if m != target)
        return a, b

    def condition(
        self,
        target: str,
        projected: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        idx: torch.Tensor,
    ) -> torch.Tensor:
        """Condition `[N, C, L']` for the samples `idx` (all missing `target`).

        Per sample: pair conv on the concat when both other modalities are present, else the
        one present projection. Projections enter detached (they are frozen targets); the
        pair conv keeps its graph so the DSM loss trains it.
        """
        a, b = self.others(target)
        xa, xb = projected[a][idx].detach(), projected[b][idx].detach()
        has_a, has_b = masks[a][idx], masks[b][idx]
        if not bool((has_a | has_b).all()):
            raise ValueError(f"a sample missing {target} has no other modality to condition on")
        single = torch.where(has_a[:, None, None], xa, xb)
        both = has_a & has_b
        if not bool(both.any()):
            return single
        pair = self.cond[target](torch.cat([xa, xb], dim=1))
        return torch.where(both[:, None, None], pair, single)

    def _complete(
        self,
        projected: dict[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        with_losses: bool,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
        """Projections with missing rows recovered; DSM terms per modality and rec loss."""
        filled = dict(projected)
        scores: dict[str, torch.Tensor] = {}
        rec: torch.Tensor | None = None
        for m in MODALITIES:
            idx = (~masks[m]).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            target = projected[m][idx].detach()
            cond = self.condition(m, projected, masks, idx)
            if with_losses:
                scores[m] = dsm_loss(
                    self.score[m], target, cond, self.sde, condition_noise=self.condition_noise
                )
            sampled = sample(
                self.score[m], cond.detach(), self.sde, steps=self.steps, method=self.sampler
            )
            refined = self.refine[m](sampled)
            if with_losses:
                term = F.mse_loss(refined, target)
                rec = term if rec is None else rec + term
            filled[m] = projected[m].index_copy(0, idx, refined.to(projected[m].dtype))
        return filled, scores, rec

    def recover(
        self,
        inputs: Inputs,
        present: Present | None,
        lengths: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """modality -> `[B, C, L']` projections, missing rows recovered (or zeroed)."""
        projected = self.mult.project(inputs, lengths)
        batch = projected["audio"].shape[0]
        masks = present_masks(present, batch, projected["audio"].device)
        if masks is None:
            return projected
        if not self.recovery:
            return zero_missing_projections(projected, masks)
        return self._complete(projected, masks, with_losses=False)[0]

    def forward(
        self,
        inputs: Inputs,
        lengths: Mapping[str, torch.Tensor] | None = None,
        present: Present | None = None,
    ) -> torch.Tensor:
        return self.mult.fuse(self.recover(inputs, present, lengths))

    def task_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mult.task_loss(out, y)

    def training_loss(
        self,
        inputs: Inputs,
        lengths: Mapping[str, torch.Tensor] | None,
        y: torch.Tensor,
        present: Present | None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """task + score_weight * (sum of DSM terms + rec); complete batches: task only."""
        parts = {"task": 0.0, **{f"score_{m}": 0.0 for m in MODALITIES}, "rec": 0.0}
        projected = self.mult.project(inputs, lengths)
        batch = projected["audio"].shape[0]
        masks = present_masks(present, batch, projected["audio"].device)
        if masks is None:
            filled, scores, rec = projected, {}, None
        elif not self.recovery:
            filled, scores, rec = zero_missing_projections(projected, masks), {}, None
        else:
            filled, scores, rec = self._complete(projected, masks, with_losses=True)
        task = self.task_loss(self.mult.fuse(filled), y)
        parts["task"] = float(task.detach())
        aux = [*scores.values(), *([rec] if rec is not None else [])]
        for m, term in scores.items():
            parts[f"score_{m}"] = float(term.detach())
        if rec is not None:
            parts["rec"] = float(rec.detach())
        total = task + self.score_weight * torch.stack(aux).sum() if aux else task
        return total, parts

    def sub_networks(self) -> dict[str, nn.Module]:
        """Named parts for reporting: mult, score_<m>, refine_<m>, cond_<m> (pair conv for m)."""
        nets: dict[str, nn.Module] = {"mult": self.mult}
        for kind, group in (("score", self.score), ("refine", self.refine), ("cond", self.cond)):
            nets.update({f"{kind}_{m}": group[m] for m in MODALITIES})
        return nets
