"""The MER2024 `attention_topn` baseline: several features per modality, each with its own
encoder, and the `attention` fusion over all K of them (docs/mer2024_topn.md).

A model entry lists each modality's candidate features best-ranked first
(`features: {audio: [best, second, ...]}`; `robustmer rank-features` writes that order from a
previous run's unimodal results) and `options.topn` keeps the first n of each list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.config import ModelSpec
from robustmer.models.method import TASKS, Method, require_count
from robustmer.models.registry import register
from robustmer.models.supervised import Supervised

# topn: how many features of each modality's ranked list the model reads (0: all listed).
OPTIONS: dict[str, Any] = {"topn": 0}


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_outputs: int,
    *,
    levels: Mapping[str, str] | None = None,
    parts: Mapping[str, tuple[int, ...]] | None = None,
) -> Any:
    from robustmer.models.mer2024_attention_topn.network import MER2024AttentionTopN

    parts = dict(parts or {})
    return MER2024AttentionTopN(
        {m: tuple(parts.get(m, (input_dims[m],))) for m in spec.features},
        n_outputs,
        hidden_dim=spec.hidden_dim,
        num_layers=spec.num_layers,
        dropout=spec.dropout,
        topn=int(METHOD.resolved_options(spec)["topn"]),
    )


def check(spec: ModelSpec) -> None:
    require_count(spec, "topn", OPTIONS["topn"], "reads every listed feature")


METHOD = register(
    Method(
        "mer2024_attention_topn",
        build,
        Supervised(),
        feature_parts=True,
        tasks=TASKS,  # a valence head (MER2023) is one more unit of the head
        options=OPTIONS,
        check=check,
    )
)
