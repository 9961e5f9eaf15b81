"""IMDer (docs/imder.md): a MulT pretrained on complete data, then one conditional score network
per modality that samples each missing modality from the available ones, and RCAN refinement.
Networks in `network.py` (IMDer), `mult.py` (the MulT backbone) and `score_diffusion.py`; paper
presets in `presets.yaml`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.errors import ConfigError
from robustmer.models.method import FoldContext, Method
from robustmer.models.registry import register
from robustmer.models.supervised import PretrainThenFineTune

# Every option with its default (the networks' own defaults; tests/test_methods.py checks).
MULT_OPTIONS: dict[str, Any] = {
    "seq_len": 50, "proj_dim": 32, "nlevels": 4, "num_heads": 8, "attn_dropout": 0.0,
    "attn_dropout_a": 0.0, "attn_dropout_v": 0.0, "relu_dropout": 0.0, "res_dropout": 0.0,
    "out_dropout": 0.0, "embed_dropout": 0.0,
}  # fmt: skip
OPTIONS: dict[str, Any] = {
    **MULT_OPTIONS,
    "sigma": 25.0,
    "sampler": "euler_maruyama",
    "steps": 100,
    "score_weight": 0.1,
    "recovery": True,
    "condition_noise": "same",
}


def check(spec: Any) -> None:
    """MulT/IMDer fuse exactly audio, video and text."""
    if set(spec.features) != {"audio", "video", "text"}:
        raise ConfigError(
            f"model {spec.name!r}: {spec.arch} fuses audio, video and text; its `features` "
            f"names {sorted(spec.features)}"
        )


def _given(spec: Any, allowed: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in METHOD.resolved_options(spec).items() if k in allowed}


def build_mult(
    spec: Any,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    """IMDer's stage 1: the MulT backbone trained on complete data (MR = 0)."""
    from robustmer.models.imder.mult import MulT

    return MulT(input_dims, n_classes, **_given(spec, MULT_OPTIONS))


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.imder.network import IMDer

    return IMDer(input_dims, n_classes, **_given(spec, OPTIONS))


def prepare(model: Any, fold: FoldContext) -> Any:
    """Load the fold's pretrained MulT (strict) and freeze its projections; plain task loss."""
    model.load_pretrained(fold.stage1_state())

    def objective(m: Any, inputs: Any, lengths: Any, y: Any, present: Any) -> Any:
        return m.training_loss(inputs, lengths, y, present)[0]

    return objective


METHOD = register(
    Method(
        "imder",
        build,
        # The released code validates under the training schedule.
        PretrainThenFineTune(corrupted_validation=True, stage1=build_mult, prepare=prepare),
        frame_inputs=True,
        options=OPTIONS,
        check=check,
        inference_options=frozenset({"sampler", "steps", "recovery"}),
    )
)
