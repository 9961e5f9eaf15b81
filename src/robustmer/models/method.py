"""The method unit: what a method package declares, and the contract of its training recipe.

A method is one package, `robustmer/models/<arch>/` (or any importable package named `<arch>`
outside robustmer), whose `__init__` calls `models.registry.register(Method(...))`. It declares
the network that evaluation loads (`build`), its options with their defaults, the tasks it
supports, whether it reads frame sequences, and a `Recipe`: how one (fold, seed) of the
`pretrain` and `train` stages is trained. The training layer hands the recipe a `FoldContext`
(data, split, settings, the shared training loop, the stage-1 weights), so a method owns its
training without importing training/: layers point down, and models/ only sees the contract
written here.

This module is light (no torch at import time): params validation asks it for a method's options
and tasks without loading any network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from robustmer.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from robustmer.config import ModelSpec, TrainConfig
    from robustmer.corruption.training import TrainingCorruption
    from robustmer.data.model_data import FoldSplit, FoldTensors, ModelData

TASKS = frozenset({"classification", "regression", "classification_valence"})
# What a method supports unless it says otherwise: a valence head is declared (MER2023).
DEFAULT_TASKS = frozenset({"classification", "regression"})

# (spec, input_dims, n_outputs, levels=...) -> the network; n_outputs is 1 for regression.
Builder = Callable[..., "nn.Module"]
# (model, inputs, lengths, y, present) -> scalar loss; None means the task loss.
Objective = Callable[..., "torch.Tensor"]


@dataclass
class FitResult:
    """One trained (fold, seed): the weights that go into the checkpoint and how they were chosen.

    `extra` holds what a recipe wants recorded beside the fold's summary (plain JSON values).
    """

    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class FoldContext(Protocol):
    """What the training layer gives a recipe for one (fold, training seed) of one stage.

    `cfg` holds this stage's settings (the model's `train` or `pretrain` overrides applied);
    `tensors` holds every row normalised with the fold's training statistics; `split` names the
    fold's train, val, test and unlabelled rows (test rows are never trained on, and their
    labels must not be read by a recipe). torch is already seeded with `seed`.
    """

    spec: ModelSpec
    cfg: TrainConfig
    data: ModelData
    split: FoldSplit
    replicate: int
    seed: int
    stage: str
    device: torch.device
    tensors: FoldTensors

    def build(self) -> nn.Module:
        """The method's network (`Method.build`) for this data: what evaluation will load."""
        ...

    def fit(
        self,
        model: nn.Module,
        *,
        objective: Objective | None = None,
        corruption: TrainingCorruption | None = None,
        val_present: dict[str, np.ndarray] | None = None,
        train: np.ndarray | None = None,
        tensors: FoldTensors | None = None,
        cfg: TrainConfig | None = None,
        tag: str = "",
        keep: str = "best",
        streams: Sequence[torch.Generator | np.random.Generator] = (),
    ) -> FitResult:
        """The shared loop (Adam, schedules, early stopping on the fold's validation rows).

        `train` and `tensors` replace the fold's training rows and tensors (a self-training
        round adds pseudo-labelled rows); `tag` prefixes the logged epoch metrics of this fit;
        `keep="last"` trains every epoch and keeps the last weights without scoring the
        validation rows (label-free pretraining has nothing to select by).

        Every fit is resumable: an interrupted run restarts the unit, replays the fits that had
        finished (their weights and random states, without training) and continues the one in
        progress from its last epoch checkpoint. For that to give the same numbers, a recipe
        must be deterministic between fits given the seed, and pass in `streams` every random
        generator of its own that the objective draws from during the fit (the loop already
        saves torch's, NumPy's and Python's global streams and the corruption's).
        """
        ...

    def predict(self, model: nn.Module, rows: np.ndarray) -> np.ndarray:
        """The model's outputs (logits) `[len(rows), C]` for these rows, in eval mode, seeded."""
        ...

    def training_corruption(self) -> TrainingCorruption | None:
        """The model entry's `train_corruption`, drawn from this fold's seed stream."""
        ...

    def stage1_state(self) -> dict[str, torch.Tensor]:
        """The weights `pretrain` saved for this fold and seed; an error naming the fix if none."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics on this fold's MLflow run."""
        ...


class Recipe(Protocol):
    """How a method trains. `pretrains` says whether `robustmer pretrain` trains anything."""

    pretrains: bool

    def pretrain(self, fold: FoldContext) -> FitResult:
        """Stage 1 of one fold (only called when `pretrains`)."""
        ...

    def train(self, fold: FoldContext) -> FitResult:
        """The model of one fold, from `fold.stage1_state()` where the method pretrains."""
        ...


@dataclass(frozen=True)
class Method:
    """A method as params.yaml names it (`models.<m>.arch`).

    `build` is the network that `evaluate` loads from a checkpoint; `frame_inputs` says whether
    it reads frame sequences (if not, frame features arrive as their utterance mean);
    `feature_parts` that its builder takes `parts={modality: (dim, ...)}`, the dims of the
    features listed for each modality, whose concatenation is the modality's input. `options`
    maps every option the method knows to its default; `check` adds validation that needs the
    whole model entry (e.g. which modalities it fuses). `inference_options` may differ between
    training and evaluation without retraining (IMDer's sampler and steps).
    """

    name: str
    build: Builder
    recipe: Recipe
    frame_inputs: bool = False
    feature_parts: bool = False
    tasks: frozenset[str] = DEFAULT_TASKS
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[ModelSpec], None] | None = None
    inference_options: frozenset[str] = frozenset()

    def validate(self, spec: ModelSpec, source: str = "params") -> None:
        """Load-time checks of one model entry: known options, a supported task, `check`."""
        unknown = set(spec.options) - set(self.options)
        if unknown:
            raise ConfigError(
                f"{source}: model {spec.name!r}: unknown {self.name} options {sorted(unknown)} "
                f"(known: {sorted(self.options)})"
            )
        if spec.task not in self.tasks:
            raise ConfigError(
                f"{source}: models.{spec.name}: arch {self.name} supports only task: "
                f"{' or '.join(sorted(self.tasks))}; remove `task: {spec.task}` or use another "
                "arch"
            )
        if self.check is not None:
            self.check(spec)

    def resolved_options(self, spec: ModelSpec) -> dict[str, Any]:
        """The entry's options over the method's defaults."""
        return {**self.options, **spec.options}


def require_count(spec: ModelSpec, key: str, default: int, zero: str) -> None:
    """Refuse an option that must be a whole number >= 0; `zero` says what 0 means."""
    value = spec.options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(
            f"models.{spec.name}.options.{key}: {value!r} is not a whole number >= 0 (0 {zero})"
        )


def n_outputs(task: str, n_classes: int) -> int:
    """Outputs of a model's head: one score per class, one value for regression, or one score
    per class then the valence (`classification_valence`, the last output)."""
    if task == "regression":
        return 1
    return n_classes + 1 if task == "classification_valence" else n_classes
