"""Architecture names used in params.yaml (`models.<name>.arch`) -> how to build the model.

A builder has the signature `build(spec, input_dims, n_classes, *, levels=None) -> nn.Module`;
`levels` tells it which modalities arrive as frame sequences. `frame_inputs` says whether the
architecture consumes frame sequences at all: if not, the data layer hands it utterance vectors
(the frame mean) for frame-level features. New methods (NMER, IMDer, ...) register here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from robustmer.config import ModelSpec
from robustmer.errors import ConfigError
from robustmer.models.baselines import EarlyFusionMLP, MER2024Attention

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Builder
    frame_inputs: bool


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, *, frame_inputs: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: make `build` available as `arch: <name>` in params.yaml."""

    def wrap(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(name, build, frame_inputs)
        return build

    return wrap


def architecture(name: str) -> Architecture:
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown model architecture {name!r} (known: {known})")
    return _REGISTRY[name]


def architectures() -> list[str]:
    return sorted(_REGISTRY)


def build_model(
    spec: ModelSpec,
    input_dims: Mapping[str, int],
    n_classes: int,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    """Build the model named by `spec.arch` for these per-modality input dims."""
    missing = set(spec.features) - set(input_dims)
    if missing:
        raise ConfigError(f"model {spec.name!r}: no input dims for {sorted(missing)}")
    return architecture(spec.arch).build(spec, dict(input_dims), n_classes, levels=levels)


@register("early_fusion")
def build_early_fusion(
    spec: ModelSpec,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    return EarlyFusionMLP(
        {m: input_dims[m] for m in spec.features},
        n_classes,
        hidden_dim=spec.hidden_dim,
        num_layers=spec.num_layers,
        dropout=spec.dropout,
    )


@register("mer2024_attention", frame_inputs=True)
def build_mer2024_attention(
    spec: ModelSpec,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    return MER2024Attention(
        {m: input_dims[m] for m in spec.features},
        n_classes,
        hidden_dim=spec.hidden_dim,
        num_layers=spec.num_layers,
        dropout=spec.dropout,
        levels=levels,
    )
