"""The early-fusion MLP: concatenated modality vectors (in the reference's audio, text, video
order) -> MLP encoder -> linear head. With one modality it is the MER2024 unimodal baseline."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from robustmer.models.encoders import MLPEncoder, fusion_order


class EarlyFusionMLP(nn.Module):
    """Concatenate the modality vectors -> MLPEncoder -> Linear(n_classes).

    With one modality this is the MER2024 unimodal MLP baseline.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        n_classes: int,
        hidden_dim: int = 128,
        num_layers: int = 3,
        dropout: float = 0.3,
    ):
        super().__init__()
        self.modalities = fusion_order(input_dims)
        self.encoder = MLPEncoder(
            sum(input_dims[m] for m in self.modalities), hidden_dim, num_layers, dropout
        )
        self.head = nn.Linear(hidden_dim, n_classes)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        lengths: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = torch.cat([inputs[m] for m in self.modalities], dim=1)
        return self.head(self.encoder(x))
