"""Shared building blocks: per-modality encoders that map one input to a `[B, H]` vector.

Every fusion model (baselines now; NMER, IMDer, ... later) builds on these, so an encoder change
reaches all of them and comparisons stay fair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from robustmer.models.sequence import pool_frames

Pooling = Literal["mean", "last"]
# The reference's fusion order ([a, t, v]), whatever order params list the modalities in.
FUSION_ORDER = ("audio", "text", "video")


def fusion_order(modalities: Mapping[str, object] | list[str]) -> list[str]:
    """The modalities present, in the canonical fusion order (unknown names sorted after)."""
    names = list(modalities)
    known = [m for m in FUSION_ORDER if m in names]
    return known + sorted(m for m in names if m not in FUSION_ORDER)


class MLPEncoder(nn.Module):
    """MER2024's MLP encoder: Dropout(input) -> num_layers x (Linear -> ReLU), no normalisation."""

    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int = 3, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(p=dropout)]
        width = in_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMEncoder(nn.Module):
    """Frame sequences `[B, T, D]` (zero-padded) + lengths `[B]` -> `[B, H]`.

    A single-layer unidirectional LSTM runs over packed sequences, so padding never reaches the
    recurrence and a padded batch gives each sequence the same output as running it alone.
    `pooling="mean"` (default) averages the hidden outputs over the real frames, which is more
    stable than the last state on short, noisy frame features; `pooling="last"` returns the
    hidden state after the last real frame. Dropout is applied to the input frames, like
    MLPEncoder. A sequence of length 0 (e.g. no face detected) is encoded as one all-zero frame.
    `max_frames` > 0 first mean-pools a longer sequence to at most that many frames
    (`models.sequence.pool_frames`, the MER2024 recipe): 100 Hz LLD frames cost what a few
    dozen do.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        dropout: float = 0.3,
        pooling: Pooling = "mean",
        max_frames: int = 0,
    ):
        super().__init__()
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', not {pooling!r}")
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0 (0: every frame), not {max_frames}")
        self.max_frames = max_frames
        self.dropout = nn.Dropout(p=dropout)
        self.lstm = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        self.pooling = pooling
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"LSTMEncoder expects [B, T, D] input, got {tuple(x.shape)}")
        batch, steps = x.shape[0], x.shape[1]
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        if self.max_frames and steps > self.max_frames:
            x, lengths = pool_frames(x, lengths, self.max_frames)
            steps = x.shape[1]
        lengths = lengths.detach().to("cpu", torch.long).clamp(min=1, max=max(steps, 1))
        if steps == 0:
            x = x.new_zeros(batch, 1, x.shape[2])
        packed = pack_padded_sequence(
            self.dropout(x), lengths, batch_first=True, enforce_sorted=False
        )
        out, (h_n, _) = self.lstm(packed)
        if self.pooling == "last":
            return h_n[-1]
        padded, _ = pad_packed_sequence(out, batch_first=True)  # zeros beyond each length
        return padded.sum(dim=1) / lengths.to(padded.device, padded.dtype).unsqueeze(1)
