"""NMER (docs/nmer.md): stage-1 encoders with CE + CMD, then the noise scheduler, conditional VAE
and a frozen stage-1 teacher. Networks in `network.py`, paper presets in `presets.yaml`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.models.method import FoldContext, Method
from robustmer.models.registry import register
from robustmer.models.supervised import PretrainThenFineTune

# Every option with its default (the network's own defaults; tests/test_methods.py checks).
OPTIONS: dict[str, Any] = {
    "residual": True,
    "vae_attention": "per_sample",
    "noise_kind": "gaussian",
    "noise_steps": 100,
    "frame_pool": None,
}


def build_stage1(
    spec: Any,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.nmer.network import NMERStage1

    frame_pool = METHOD.resolved_options(spec)["frame_pool"]
    return NMERStage1(input_dims, dict(levels or {}), n_classes, hidden=spec.hidden_dim,
                      dropout=spec.dropout, frame_pool=frame_pool)  # fmt: skip


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.nmer.network import NMER

    return NMER(input_dims, dict(levels or {}), n_classes, hidden=spec.hidden_dim,
                **METHOD.resolved_options(spec))  # fmt: skip


def prepare(model: Any, fold: FoldContext) -> Any:
    """Kaiming init, stage-1 weights into the encoders, and a frozen stage-1 teacher."""
    from robustmer.models.nmer.network import kaiming_init

    state = fold.stage1_state()
    data = fold.data
    teacher = build_stage1(fold.spec, data.input_dims, len(data.classes), levels=data.levels)
    teacher.load_state_dict(state)
    teacher.to(fold.device).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    kaiming_init(model)  # already done at construction; kept explicit as the released order
    model.load_stage1(state)

    def objective(m: Any, inputs: Any, lengths: Any, y: Any, present: Any) -> Any:
        return m.training_loss(inputs, lengths, y, present, teacher)[0]

    return objective


METHOD = register(
    Method(
        "nmer",
        build,
        PretrainThenFineTune(corrupted_validation=True, stage1=build_stage1, prepare=prepare),
        frame_inputs=True,
        tasks=frozenset({"classification"}),  # CE + teacher logits need classes
        options=OPTIONS,
    )
)
