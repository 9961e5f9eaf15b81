"""The MER2024 attention fusion baseline: one encoder per modality (MLP for utterance vectors,
LSTM with mean pooling for frame sequences) and unnormalised attention weights over them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.models.method import TASKS, Method, require_count
from robustmer.models.registry import register
from robustmer.models.supervised import Supervised


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_outputs: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.mer2024_attention.network import MER2024Attention

    return MER2024Attention(
        {m: input_dims[m] for m in spec.features},
        n_outputs,
        hidden_dim=spec.hidden_dim,
        num_layers=spec.num_layers,
        dropout=spec.dropout,
        levels=levels,
        max_frames=int(METHOD.resolved_options(spec)["max_frames"]),
    )


# max_frames: frame sequences longer than this are mean-pooled to this many frames before the
# LSTM (the MER2024 recipe's pooling; 0 reads every frame).
OPTIONS: dict[str, Any] = {"max_frames": 0}


def check(spec: Any) -> None:
    require_count(spec, "max_frames", OPTIONS["max_frames"], "reads every frame")


# MER2023's `attention` predicts the valence beside the class: one more unit of the head.
METHOD = register(
    Method(
        "mer2024_attention",
        build,
        Supervised(),
        frame_inputs=True,
        tasks=TASKS,
        options=OPTIONS,
        check=check,
    )
)
