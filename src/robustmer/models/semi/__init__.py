"""MER2024-SEMI (docs/semi.md): contrastive pretraining on labelled and unlabelled utterances,
then fine-tuning of per-modality encoders with four classifiers and weighted soft voting, and
self-training rounds that add the voted classifier's confident pseudo-labels of the pool.

Networks and losses in `network.py` and `losses.py`, pseudo-labelling in `pseudo.py`, the
recipe in `recipe.py`, presets in `presets.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.errors import ConfigError
from robustmer.models.method import Method
from robustmer.models.registry import register
from robustmer.models.semi.recipe import SelfTraining

# Every option with its default (the network's own defaults where it has them;
# tests/test_methods.py checks).
NETWORK_OPTIONS: dict[str, Any] = {
    "nhead": 4,
    "ff_dim": 256,
    "layers": 1,
    "vote_weights": [0.7, 0.4, 0.3, 0.7],  # audio, video, text, fused (released)
    "batch_as_sequence": False,  # released quirk: attention across the batch
    "released_contrast": False,  # released NT-Xent: raw dot, tau twice, self positives
    "classifier_layers": [256, 128],
    "noise_steps": 100,
}
OPTIONS: dict[str, Any] = {
    **NETWORK_OPTIONS,
    "contrastive_pretraining": True,  # ablation "w/o contrastive pretraining": false
    "pseudo_labels": True,  # ablation "w/o pseudo labels": false
    "oversample": True,  # ablation "w/o oversampling": false
    "rounds": 1,  # self-training rounds (1 in the paper)
    # Confidence a pool sample needs to be kept, per class (spec); other classes: `threshold`.
    "thresholds": {
        "neutral": 0.99,
        "angry": 0.99,
        "happy": 0.99,
        "sad": 0.99,
        "worried": 0.85,
        "surprise": 0.85,
    },
    "threshold": 0.99,
    "adaptive_thresholds": False,  # FlexMatch-style per-class scaling of the thresholds
    "min_threshold": 0.5,  # floor of the adaptive thresholds
}


def check(spec: Any) -> None:
    """Three modalities, sensible voting weights, thresholds and rounds."""
    if set(spec.features) != {"audio", "video", "text"}:
        raise ConfigError(
            f"model {spec.name!r}: semi fuses audio, video and text; its `features` names "
            f"{sorted(spec.features)}"
        )
    opts = {**OPTIONS, **spec.options}
    where = f"models.{spec.name}.options"
    weights = opts["vote_weights"]
    if not isinstance(weights, list | tuple) or len(weights) != 4:
        raise ConfigError(f"{where}.vote_weights: four numbers (audio, video, text, fused)")
    if not isinstance(opts["rounds"], int) or opts["rounds"] < 0:
        raise ConfigError(f"{where}.rounds: a whole number >= 0, got {opts['rounds']!r}")
    values = [*dict(opts["thresholds"]).values(), opts["threshold"], opts["min_threshold"]]
    if not all(isinstance(v, int | float) and 0 <= v <= 1 for v in values):
        raise ConfigError(f"{where}: thresholds must lie in [0, 1]")


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_outputs: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.semi.network import SemiNet

    opts = METHOD.resolved_options(spec)
    net = {k: opts[k] for k in NETWORK_OPTIONS}
    net["vote_weights"] = tuple(net["vote_weights"])
    net["classifier_layers"] = tuple(net["classifier_layers"])
    return SemiNet(input_dims, n_outputs, hidden=spec.hidden_dim, dropout=spec.dropout, **net)


METHOD = register(
    Method(
        "semi",
        build,
        SelfTraining(),
        tasks=frozenset({"classification"}),  # pseudo-labels and voting need classes
        options=OPTIONS,
        check=check,
    )
)
