"""Early fusion: an MLP over the concatenated utterance vectors of one modality or several."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.models.method import TASKS, Method
from robustmer.models.registry import register
from robustmer.models.supervised import Supervised


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_outputs: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.early_fusion.network import EarlyFusionMLP

    return EarlyFusionMLP(
        {m: input_dims[m] for m in spec.features},
        n_outputs,
        hidden_dim=spec.hidden_dim,
        num_layers=spec.num_layers,
        dropout=spec.dropout,
    )


# A valence output is one more unit of the head (MERTools' baselines all have one for MER2023).
METHOD = register(Method("early_fusion", build, Supervised(), tasks=TASKS))
