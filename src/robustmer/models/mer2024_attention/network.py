"""The MER2024 `attention` fusion model: `forward(inputs, lengths=None)` with `inputs` =
modality -> `[B, D]` utterance vectors or `[B, T, D]` zero-padded frames (then `lengths[m]`);
class logits out. Modalities combine in the reference's order audio, text, video."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from robustmer.models.encoders import LSTMEncoder, MLPEncoder, fusion_order


class MER2024Attention(nn.Module):
    """MER2024 `attention` fusion: per-modality encoders, learned (unnormalised) modality weights.

    h_m = encoder_m(x_m) (MLP for utterance features, LSTM for frame features), each `[B, H]`;
    w = Linear(H, M)(MLPEncoder(M*H -> H)(concat_m h_m)) gives M weights per sample that are NOT
    softmaxed (as in the reference); fused = stack([h_a, h_t, h_v], dim=2) @ w -> `[B, H]`;
    logits = Linear(H, n_classes)(fused).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        n_classes: int,
        hidden_dim: int = 128,
        num_layers: int = 3,
        dropout: float = 0.3,
        levels: Mapping[str, str] | None = None,
        lstm_pooling: str = "mean",
        max_frames: int = 0,
    ):
        super().__init__()
        levels = dict(levels or {})
        self.modalities = fusion_order(input_dims)
        self.frame_modalities = {m for m in self.modalities if levels.get(m) == "frame"}
        encoders: dict[str, nn.Module] = {}
        for m in self.modalities:
            if m in self.frame_modalities:
                encoders[m] = LSTMEncoder(input_dims[m], hidden_dim, dropout, lstm_pooling,
                                          max_frames)  # fmt: skip
            else:
                encoders[m] = MLPEncoder(input_dims[m], hidden_dim, num_layers, dropout)
        self._attend_over(encoders, n_classes, hidden_dim, num_layers, dropout)

    def _attend_over(
        self,
        encoders: Mapping[str, nn.Module],
        n_classes: int,
        hidden_dim: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        """The fusion over K encoded inputs: K raw weights from their concatenation, a head."""
        self.encoders = nn.ModuleDict(encoders)
        k = len(encoders)
        self.attention_mlp = MLPEncoder(k * hidden_dim, hidden_dim, num_layers, dropout)
        self.attention_out = nn.Linear(hidden_dim, k)
        self.head = nn.Linear(hidden_dim, n_classes)

    def encode(
        self,
        inputs: Mapping[str, torch.Tensor],
        lengths: Mapping[str, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        hidden = []
        for m in self.modalities:
            if m in self.frame_modalities:
                hidden.append(self.encoders[m](inputs[m], (lengths or {}).get(m)))
            else:
                hidden.append(self.encoders[m](inputs[m]))
        return hidden

    def modality_weights(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """`[B, K, 1]` raw attention weights over the K encoded inputs (no softmax)."""
        return self.attention_out(self.attention_mlp(torch.cat(hidden, dim=1))).unsqueeze(2)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        lengths: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        hidden = self.encode(inputs, lengths)
        weights = self.modality_weights(hidden)
        fused = torch.matmul(torch.stack(hidden, dim=2), weights).squeeze(2)  # [B,H,M]@[B,M,1]
        return self.head(fused)
