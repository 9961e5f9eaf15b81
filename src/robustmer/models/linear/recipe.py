"""How the linear floor is trained: one exact fit per `C`, the best `C` by validation score.

No epochs, no early stopping and no random draw: the optimum of a convex objective does not
depend on the seed, so the training replicates give the same model (their spread is zero, which
is what a floor should show). The shared loop is not used because its optimisers (Adam, AdamW)
only approach that optimum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustmer.errors import ConfigError
from robustmer.metrics import classification_metrics, higher_is_better, regression_metrics
from robustmer.models.method import FitResult, FoldContext

log = logging.getLogger(__name__)

# (score, step, validation metrics, weights, solver report) of one C
Candidate = tuple[tuple[float, float], int, dict[str, float], dict[str, Any], dict[str, float]]


@dataclass(frozen=True)
class LinearFit:
    """The recipe of `arch: linear` (options C, max_iter, tol: models/linear/__init__.py)."""

    pretrains = False

    def pretrain(self, fold: FoldContext) -> FitResult:
        raise ConfigError(f"model {fold.spec.name!r}: linear has no pretraining stage")

    def train(self, fold: FoldContext) -> FitResult:
        from robustmer.models.linear import METHOD
        from robustmer.models.linear.network import fit_linear

        options = METHOD.resolved_options(fold.spec)
        grid = options["C"] if isinstance(options["C"], list) else [options["C"]]
        split, tensors, task = fold.split, fold.tensors, fold.tensors.task
        if len(split.val) == 0 and len(grid) > 1:
            raise ConfigError(
                f"models.{fold.spec.name}.options.C: choosing among {grid} needs validation rows, "
                "and this fold has none; give one C"
            )
        inputs, _, y = tensors.batch(split.train)
        metric = fold.cfg.selection_metric
        sign = 1.0 if higher_is_better(metric) else -1.0
        best: Candidate | None = None
        history: list[dict[str, float]] = []
        for step, c in enumerate(grid, start=1):
            model = fold.build().to(fold.device)
            x = model.features(inputs)
            solver = fit_linear(model, x, y, task, float(c), options["max_iter"], options["tol"])
            metrics = {"C": float(c), "train_loss": solver["objective"] / (float(c) * len(x))}
            if len(split.val):
                metrics |= validation(fold, model, split.val)
            history.append({"epoch": step, **metrics})
            fold.log_metrics(metrics, step)
            # The selection metric, then the validation loss (UA often ties across C on small
            # folds), then the order listed.
            score = (nan_low(sign * metrics.get(f"val_{metric}", np.nan)),
                     nan_low(-metrics.get("val_loss", np.nan)))  # fmt: skip
            if best is None or score > best[0]:
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                best = (score, step, metrics, state, solver)
        assert best is not None
        _, step, metrics, state, solver = best
        if solver["grad_max"] > 100 * options["tol"]:
            log.warning(
                "models.%s: L-BFGS stopped after %d iterations with gradient %.2g > tol; raise "
                "options.max_iter", fold.spec.name, solver["iterations"], solver["grad_max"],
            )  # fmt: skip
        extra = {"C": metrics["C"], "iterations": solver["iterations"],
                 "grad_max": solver["grad_max"]}  # fmt: skip
        return FitResult(step, metrics, len(grid), state, history, extra)


def nan_low(value: float) -> float:
    """A score to maximise, NaN (undefined on these rows) ranked lowest."""
    return -np.inf if np.isnan(value) else value


def validation(fold: FoldContext, model: Any, rows: np.ndarray) -> dict[str, float]:
    """val_loss (the task's mean loss) and val_<metric> of the model on `rows`."""
    out = fold.predict(model, rows)
    truth = fold.tensors.y.cpu().numpy()[rows]
    if fold.tensors.task == "regression":
        scores = regression_metrics(truth, out[:, 0])
        loss = float(np.abs(out[:, 0] - truth).mean())
    else:
        scores = classification_metrics(truth, out.argmax(1), out.shape[1])
        shifted = out - out.max(1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss = float(-log_p[np.arange(len(rows)), truth].mean())
    return {"val_loss": loss} | {f"val_{k}": v for k, v in scores.items() if not k.startswith("n_")}
