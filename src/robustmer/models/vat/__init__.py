"""VAT (docs/vat.md): the video-audio transformer of the MER 2023 winners, ALBEF with text
replaced by audio. Label-free pretraining aligns video and audio (contrast with a momentum queue,
matching with hard negatives); fine-tuning distils from a momentum model, with unimodal branches.

Networks in `network.py` (VAT) and `pretrain.py` (VATPretrain), frame masking in `augment.py`,
the recipe in `recipe.py`, presets in `presets.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.errors import ConfigError
from robustmer.models.method import Method
from robustmer.models.registry import register
from robustmer.models.vat.recipe import AlignThenDistill

# Every option with its default (the networks' own defaults; tests/test_vat.py checks).
NETWORK_OPTIONS: dict[str, Any] = {
    "heads": 4,
    "video_layers": 2,
    "audio_layers": 2,
    "fusion_layers": 1,
    "ff_mult": 4,
    "max_frames": 32,  # longer frame sequences are mean-pooled in groups down to this
}
PRETRAIN_OPTIONS: dict[str, Any] = {
    "embed_dim": 256,  # contrastive projection (ALBEF)
    "temp": 0.07,  # initial temperature, clamped to [0.001, 0.5]
    "queue_size": 256,  # momentum-feature queue; a multiple of the pretraining batch
    "momentum": 0.995,  # EMA of the momentum model (pretraining and distillation)
    "alpha": 0.4,  # weight of the momentum model's soft targets, ramped over the first epoch
    "matching": True,  # video-audio matching with hard negatives (ablation: false)
}
OPTIONS: dict[str, Any] = {
    **NETWORK_OPTIONS,
    **PRETRAIN_OPTIONS,
    "pretraining": True,  # ablation "without pretraining": false
    "distillation": True,  # ablation "without momentum distillation": false
    "unimodal_weight": 0.3,  # loss weight of each unimodal branch (fused: 1)
    "time_mask": 0.0,  # training augmentation: share of frames masked per utterance (at most)
    "feature_mask": 0.0,  # ... and share of feature dims
}


def check(spec: Any) -> None:
    """Audio and video (text optional); settings in range."""
    streams = set(spec.features)
    if not {"audio", "video"} <= streams <= {"audio", "video", "text"}:
        raise ConfigError(
            f"model {spec.name!r}: vat reads audio and video (text optional); its `features` "
            f"names {sorted(streams)}"
        )
    opts = {**OPTIONS, **spec.options}
    where = f"models.{spec.name}.options"
    checks = {
        "heads": isinstance(opts["heads"], int) and opts["heads"] > 0
        and spec.hidden_dim % opts["heads"] == 0,
        "max_frames": isinstance(opts["max_frames"], int) and opts["max_frames"] >= 1,
        "queue_size": isinstance(opts["queue_size"], int) and opts["queue_size"] >= 0,
        "momentum": 0.0 < float(opts["momentum"]) < 1.0,
        "alpha": 0.0 <= float(opts["alpha"]) <= 1.0,
        "temp": 0.001 <= float(opts["temp"]) <= 0.5,
        "unimodal_weight": float(opts["unimodal_weight"]) >= 0.0,
        "time_mask": 0.0 <= float(opts["time_mask"]) < 1.0,
        "feature_mask": 0.0 <= float(opts["feature_mask"]) < 1.0,
    }  # fmt: skip
    rules = {
        "heads": f"a positive whole number dividing hidden_dim ({spec.hidden_dim})",
        "max_frames": "a whole number >= 1",
        "queue_size": "a whole number >= 0 (0: no queue), a multiple of the pretraining batch",
        "momentum": "in (0, 1)",
        "alpha": "in [0, 1]",
        "temp": "in [0.001, 0.5] (the clamp)",
        "unimodal_weight": ">= 0",
        "time_mask": "in [0, 1)",
        "feature_mask": "in [0, 1)",
    }
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"{where}.{key}: {rules[key]}, got {opts[key]!r}")


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_outputs: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.vat.network import VAT

    opts = METHOD.resolved_options(spec)
    net = {k: opts[k] for k in NETWORK_OPTIONS}
    return VAT(input_dims, n_outputs, width=spec.hidden_dim, dropout=spec.dropout, **net)


METHOD = register(
    Method(
        "vat",
        build,
        AlignThenDistill(),
        frame_inputs=True,
        tasks=frozenset({"classification"}),  # distillation and matching are over classes
        options=OPTIONS,
        check=check,
    )
)
