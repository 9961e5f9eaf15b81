"""Architecture names used in params.yaml (`models.<name>.arch`) -> how to build the model.

A builder has the signature `build(spec, input_dims, n_classes, *, levels=None) -> nn.Module`;
`n_classes` is the number of outputs (`n_outputs`: 1 for a `task: regression` model) and
`levels` tells it which modalities arrive as frame sequences. `frame_inputs` says whether the
architecture consumes frame sequences at all: if not, the data layer hands it utterance vectors
(the frame mean) for frame-level features. Methods with two stages (NMER) also give
`build_stage1` (the model `robustmer pretrain` trains) and `prepare`, which initialises the
model from the fold's stage-1 checkpoint and returns its training objective;
`corrupted_validation` makes model selection use the training corruption's fixed masks;
`inference_options` may change between training and evaluation (IMDer's sampler and steps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustmer.config import ModelSpec
from robustmer.errors import ConfigError
from robustmer.models.baselines import EarlyFusionMLP, MER2024Attention

Builder = Callable[..., nn.Module]


# (model, spec, stage-1 checkpoint path, data, device) -> training objective
Prepare = Callable[..., Any]


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Builder
    frame_inputs: bool
    build_stage1: Builder | None = None
    prepare: Prepare | None = None
    corrupted_validation: bool = False
    inference_options: frozenset[str] = frozenset()  # may differ between training and evaluation


_REGISTRY: dict[str, Architecture] = {}


def register(
    name: str,
    *,
    frame_inputs: bool = False,
    build_stage1: Builder | None = None,
    prepare: Prepare | None = None,
    corrupted_validation: bool = False,
    inference_options: frozenset[str] = frozenset(),
) -> Callable[[Builder], Builder]:
    """Decorator: make `build` available as `arch: <name>` in params.yaml."""

    def wrap(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(
            name, build, frame_inputs, build_stage1, prepare, corrupted_validation,
            inference_options,
        )  # fmt: skip
        return build

    return wrap


def architecture(name: str) -> Architecture:
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown model architecture {name!r} (known: {known})")
    return _REGISTRY[name]


def architectures() -> list[str]:
    return sorted(_REGISTRY)


def n_outputs(spec: ModelSpec, n_classes: int) -> int:
    """Outputs of the model's head: one score per class, or one value for regression."""
    return 1 if spec.task == "regression" else n_classes


def build_model(
    spec: ModelSpec,
    input_dims: Mapping[str, int],
    n_classes: int,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    """Build the model named by `spec.arch` for these per-modality input dims.

    `n_classes` is the store's class count; the builder gets `n_outputs(spec, n_classes)`.
    """
    missing = set(spec.features) - set(input_dims)
    if missing:
        raise ConfigError(f"model {spec.name!r}: no input dims for {sorted(missing)}")
    build = architecture(spec.arch).build
    return build(spec, dict(input_dims), n_outputs(spec, n_classes), levels=levels)


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


def stage1_objective(
    model: nn.Module, inputs: Any, lengths: Any, y: torch.Tensor, present: Any
) -> torch.Tensor:
    """Stage-1 pretraining loss of a two-stage model (NMER: CE + CMD on clean data)."""
    return model.training_loss(inputs, lengths, y)[0]


_NMER_OPTIONS = {"residual", "vae_attention", "noise_kind", "noise_steps", "frame_pool"}


def _nmer_options(spec: ModelSpec) -> dict[str, Any]:
    unknown = set(spec.options) - _NMER_OPTIONS
    if unknown:
        raise ConfigError(
            f"model {spec.name!r}: unknown nmer options {sorted(unknown)} "
            f"(known: {sorted(_NMER_OPTIONS)})"
        )
    return dict(spec.options)


def build_nmer_stage1(
    spec: ModelSpec,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    from robustmer.models.nmer import NMERStage1

    opts = _nmer_options(spec)
    return NMERStage1(input_dims, dict(levels or {}), n_classes, hidden=spec.hidden_dim,
                      dropout=spec.dropout, frame_pool=opts.get("frame_pool"))  # fmt: skip


def prepare_nmer(
    model: nn.Module, spec: ModelSpec, stage1_path: Path, data: Any, device: torch.device
) -> Callable[..., torch.Tensor]:
    """Kaiming init, stage-1 weights into the encoders, and a frozen stage-1 teacher."""
    from robustmer.errors import DataError
    from robustmer.models.nmer import kaiming_init
    from robustmer.training.checkpoint import load_checkpoint

    if not Path(stage1_path).is_file():
        raise DataError(
            f"{stage1_path}: stage-1 checkpoint not found; run `robustmer pretrain {spec.name}` "
            f"(or `dvc repro pretrain@{spec.name}`) first"
        )
    state = load_checkpoint(Path(stage1_path), spec.name)["state_dict"]
    teacher = build_nmer_stage1(spec, data.input_dims, len(data.classes), levels=data.levels)
    teacher.load_state_dict(state)
    teacher.to(device).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    kaiming_init(model)  # already done at construction; kept explicit as the released order
    model.load_stage1(state)

    def objective(
        m: nn.Module, inputs: Any, lengths: Any, y: torch.Tensor, present: Any
    ) -> torch.Tensor:
        return m.training_loss(inputs, lengths, y, present, teacher)[0]

    return objective


@register(
    "nmer",
    frame_inputs=True,
    build_stage1=build_nmer_stage1,
    prepare=prepare_nmer,
    corrupted_validation=True,
)
def build_nmer(
    spec: ModelSpec,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    from robustmer.models.nmer import NMER

    return NMER(input_dims, dict(levels or {}), n_classes, hidden=spec.hidden_dim,
                **_nmer_options(spec))  # fmt: skip


_IMDER_MULT_OPTIONS = {
    "seq_len", "proj_dim", "nlevels", "num_heads", "attn_dropout", "attn_dropout_a",
    "attn_dropout_v", "relu_dropout", "res_dropout", "out_dropout", "embed_dropout",
}  # fmt: skip
_IMDER_OPTIONS = _IMDER_MULT_OPTIONS | {
    "sigma",
    "sampler",
    "steps",
    "score_weight",
    "recovery",
    "condition_noise",
}


def _imder_options(spec: ModelSpec, allowed: set[str] = _IMDER_OPTIONS) -> dict[str, Any]:
    """The entry's options for MulT/IMDer, after the checks a params.yaml mistake needs."""
    if set(spec.features) != {"audio", "video", "text"}:
        raise ConfigError(
            f"model {spec.name!r}: {spec.arch} fuses audio, video and text; its `features` "
            f"names {sorted(spec.features)}"
        )
    unknown = set(spec.options) - _IMDER_OPTIONS
    if unknown:
        raise ConfigError(
            f"model {spec.name!r}: unknown imder options {sorted(unknown)} "
            f"(known: {sorted(_IMDER_OPTIONS)})"
        )
    return {k: v for k, v in spec.options.items() if k in allowed}


def build_mult(
    spec: ModelSpec,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    """IMDer's stage 1: the MulT backbone trained on complete data (MR = 0)."""
    from robustmer.models.mult import MulT

    return MulT(input_dims, n_classes, **_imder_options(spec, _IMDER_MULT_OPTIONS))


def prepare_imder(
    model: nn.Module, spec: ModelSpec, stage1_path: Path, data: Any, device: torch.device
) -> Callable[..., torch.Tensor]:
    """Load the fold's pretrained MulT (strict) and freeze its projections; plain task loss."""
    from robustmer.errors import DataError
    from robustmer.training.checkpoint import load_checkpoint

    if not Path(stage1_path).is_file():
        raise DataError(
            f"{stage1_path}: MulT pretraining checkpoint not found; run "
            f"`robustmer pretrain {spec.name}` (or `dvc repro pretrain@{spec.name}`) first"
        )
    model.load_pretrained(load_checkpoint(Path(stage1_path), spec.name)["state_dict"])

    def objective(
        m: nn.Module, inputs: Any, lengths: Any, y: torch.Tensor, present: Any
    ) -> torch.Tensor:
        return m.training_loss(inputs, lengths, y, present)[0]

    return objective


@register(
    "imder",
    frame_inputs=True,
    build_stage1=build_mult,
    prepare=prepare_imder,
    corrupted_validation=True,  # the released code validates under the training schedule
    inference_options=frozenset({"sampler", "steps", "recovery"}),
)
def build_imder(
    spec: ModelSpec,
    input_dims: dict[str, int],
    n_classes: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> nn.Module:
    from robustmer.models.imder import IMDer

    return IMDer(input_dims, n_classes, **_imder_options(spec))
