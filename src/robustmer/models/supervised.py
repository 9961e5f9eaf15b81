"""The two recipes most methods share: supervised training, and pretrain-then-fine-tune.

Both train with the shared loop through `FoldContext.fit`; a method with a different training
procedure (self-training rounds, label-free pretraining) writes its own recipe instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from robustmer.errors import ConfigError
from robustmer.models.method import Builder, FitResult, FoldContext, Objective, n_outputs

if TYPE_CHECKING:
    from torch import nn

# (model, fold) -> the fine-tuning objective, after loading stage-1 weights into the model.
Prepare = Callable[["nn.Module", FoldContext], Objective | None]


@dataclass(frozen=True)
class Supervised:
    """The task loss on the fold's labelled training rows, with the entry's training corruption.

    `corrupted_validation` picks the best epoch under the training corruption's fixed
    validation masks (NMER, IMDer) instead of on clean validation rows.
    """

    corrupted_validation: bool = False
    pretrains = False

    def pretrain(self, fold: FoldContext) -> FitResult:
        raise ConfigError(f"model {fold.spec.name!r}: {fold.spec.arch} has no pretraining stage")

    def train(self, fold: FoldContext) -> FitResult:
        return self.fit(fold, fold.build(), None)

    def fit(self, fold: FoldContext, model: Any, objective: Objective | None) -> FitResult:
        corruption = fold.training_corruption()
        val_present = None
        if corruption is not None and self.corrupted_validation:
            val_present = corruption.validation_masks(len(fold.split.val))
        return fold.fit(model, objective=objective, corruption=corruption, val_present=val_present)


def stage1_objective(model: Any, inputs: Any, lengths: Any, y: Any, present: Any) -> Any:
    """Stage-1 loss of a two-stage network: its own `training_loss` on clean data."""
    return model.training_loss(inputs, lengths, y)[0]


@dataclass(frozen=True)
class PretrainThenFineTune(Supervised):
    """Stage 1 (`stage1`, trained on clean labelled data by `pretrain`), then the model itself,
    which `prepare` initialises from the fold's stage-1 weights (NMER, IMDer)."""

    stage1: Builder | None = None
    prepare: Prepare | None = None
    pretrains = True

    def pretrain(self, fold: FoldContext) -> FitResult:
        assert self.stage1 is not None
        data = fold.data
        outputs = n_outputs(fold.spec.task, len(data.classes))
        model = self.stage1(fold.spec, data.input_dims, outputs, levels=data.levels)
        return fold.fit(model, objective=stage1_objective)

    def train(self, fold: FoldContext) -> FitResult:
        model = fold.build()
        objective = self.prepare(model, fold) if self.prepare is not None else None
        return self.fit(fold, model, objective)
