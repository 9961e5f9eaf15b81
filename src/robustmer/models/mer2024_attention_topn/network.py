"""MER2024 `attention_topn`: `forward(inputs)` with `inputs` = modality -> `[B, D_m]`, the
modality's listed features side by side (`parts[m]` gives their dims in listed order)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from robustmer.models.encoders import MLPEncoder, fusion_order
from robustmer.models.mer2024_attention.network import MER2024Attention


class MER2024AttentionTopN(MER2024Attention):
    """The `attention` fusion over K = sum_m min(topn, |list_m|) feature inputs.

    Each kept feature (utterance level: frame features arrive as their mean) has its own
    MLPEncoder; the K encodings get K raw weights from MLPEncoder(K*H -> H) -> Linear(H, K),
    as the modalities do in `attention`. Inputs are taken in the reference's modality order
    (audio, text, video), each modality's features best-ranked first; features after the first
    `topn` of a list are not read (`topn` 0 reads all).
    """

    def __init__(
        self,
        parts: Mapping[str, tuple[int, ...]],
        n_classes: int,
        hidden_dim: int = 128,
        num_layers: int = 3,
        dropout: float = 0.3,
        topn: int = 0,
    ):
        nn.Module.__init__(self)
        self.modalities = fusion_order(parts)
        self.frame_modalities: set[str] = set()
        # (encoder key, modality, first column, end column) of each kept feature
        self.slices: list[tuple[str, str, int, int]] = []
        encoders: dict[str, nn.Module] = {}
        for m in self.modalities:
            dims = parts[m][:topn] if topn > 0 else parts[m]
            start = 0
            for k, dim in enumerate(dims):
                key = f"{m}_{k}"
                encoders[key] = MLPEncoder(dim, hidden_dim, num_layers, dropout)
                self.slices.append((key, m, start, start + dim))
                start += dim
        self._attend_over(encoders, n_classes, hidden_dim, num_layers, dropout)

    def encode(
        self,
        inputs: Mapping[str, torch.Tensor],
        lengths: Mapping[str, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        return [self.encoders[key](inputs[m][:, a:b]) for key, m, a, b in self.slices]
