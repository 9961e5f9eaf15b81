"""The one training loop every model uses: device, AMP, Adam, early stopping, best-epoch weights.

Deterministic by construction: the caller seeds torch once per fold (weights and dropout) and
the loop shuffles with its own `torch.Generator` seeded from the same fold seed, so the same
params give the same weights and metrics on the same machine.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from robustmer.config import TrainConfig
from robustmer.corruption.training import TrainingCorruption
from robustmer.data.model_data import FoldTensors, iterate_batches
from robustmer.device import autocast
from robustmer.metrics import (
    classification_metrics,
    higher_is_better,
    regression_metrics,
    valence_metrics,
)
from robustmer.models.method import FitResult, Objective
from robustmer.models.missing import forward
from robustmer.training.resume import (
    FitCheckpoints,
    Stream,
    random_states,
    restore_random_states,
)
from robustmer.training.weight_average import WeightAverage

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class FitJob:
    """Everything one run of the loop reads: the model, its data and rows, and the settings."""

    model: nn.Module
    tensors: FoldTensors
    train: np.ndarray
    val: np.ndarray
    cfg: TrainConfig
    n_classes: int
    seed: int
    on_epoch: EpochCallback | None = None
    corruption: TrainingCorruption | None = None
    objective: Objective | None = None
    val_present: dict[str, np.ndarray] | None = None
    keep: str = "best"  # or "last": no validation, the last epoch's weights (label-free)
    checkpoints: FitCheckpoints | None = None  # epoch checkpoints to resume from and save to
    streams: Sequence[Stream] = ()  # random streams the objective draws from (saved with them)


def fit_streams(job: FitJob) -> list[Stream]:
    """The random streams a fit moves besides the global ones: the objective's, corruption's."""
    own = [job.corruption.rng, job.corruption.generator] if job.corruption is not None else []
    return [*job.streams, *own]


def fit(job: FitJob) -> FitResult:
    """Train with Adam; after each epoch score the validation rows and keep the best weights.

    The task is the data's (`tensors.task`): classification trains cross-entropy on the logits
    and scores `classification_metrics`; regression trains L1 on the single output and scores
    `regression_metrics` (y is float). The best epoch is the best `cfg.selection_metric` on
    validation, lowest for mae and loss (the validation task loss), highest otherwise; ties and
    NaN scores keep the earlier epoch. With `cfg.patience > 0` training stops once that many
    epochs pass without improvement. Epochs are numbered from 1; `on_epoch(epoch, metrics)`
    receives train_loss, val_loss and val_<metric> for every epoch. `corruption` (missing
    modalities or feature noise drawn per batch from its own seed stream) applies to training
    batches; validation stays clean unless `val_present` gives fixed per-row masks for the
    validation rows. `objective` replaces the task loss (NMER's CE + invariance +
    reconstruction + KL) and receives the same y. Adam (AdamW: `cfg.optimizer`) uses `cfg.beta1`;
    with `cfg.decay_epochs` the LR stays constant, then decays linearly over the last epochs
    (MMIN/NMER: lambda(e) = 1 - max(0, e + 1 - n_const) / (decay_epochs + 1), stepped per
    epoch); `cfg.lr_scheduler: plateau` halves (`plateau_factor`) the LR when the validation
    loss stalls for `plateau_patience` epochs (MMSA/IMDer); `cosine` warms up over
    `warmup_epochs` and follows a half cosine to `min_lr`, stepped per batch (ALBEF/VAT);
    `cfg.grad_clip` clips the gradient
    norm per sub-network when the model lists them, or each entry (`grad_clip_mode: value`).
    `cfg.average_last` > 0 keeps the mean of the weights after each of the last epochs instead
    of the best one (training/weight_average.py); the result's metrics are then the averaged
    model's on validation and its epoch the last.

    With `job.checkpoints` the loop saves its whole state after an epoch (at most every
    `cfg.checkpoint_every_s` seconds) and, when such a state exists, starts from it: the
    previous epochs are replayed to `on_epoch` and the result is bit-identical to a run that was
    never interrupted (training/resume.py).
    """
    model, tensors, train_idx, val_idx, cfg = job.model, job.tensors, job.train, job.val, job.cfg
    n_classes, seed, on_epoch, corruption, objective, val_present = (
        job.n_classes, job.seed, job.on_epoch, job.corruption, job.objective, job.val_present,
    )  # fmt: skip
    device = tensors.device
    model.to(device)
    optimiser = make_optimiser(model, cfg)
    n_batches = -(-len(train_idx) // cfg.batch_size)
    per_step = None
    if cfg.lr_scheduler == "cosine":
        per_step = torch.optim.lr_scheduler.LambdaLR(
            optimiser, cosine_lambda(cfg, cfg.epochs * n_batches, n_batches)
        )
    scheduler = None
    if cfg.decay_epochs:
        constant = cfg.epochs - cfg.decay_epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda e: 1.0 - max(0, e + 1 - constant) / (cfg.decay_epochs + 1)
        )
    plateau = None
    if cfg.lr_scheduler == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = task_loss(tensors.task)
    generator = torch.Generator().manual_seed(seed)
    key = f"val_{cfg.selection_metric}"
    sign = 1.0 if higher_is_better(cfg.selection_metric) else -1.0

    best_score, best_epoch, best_state = -np.inf, 0, None
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    schedulers = {"per_step": per_step, "decay": scheduler, "plateau": plateau}
    streams = fit_streams(job)
    average = WeightAverage(cfg.average_last, cfg.epochs) if cfg.average_last else None

    def validate() -> dict[str, float]:
        out = predict_logits(model, tensors, val_idx, cfg.batch_size, val_present, seed)
        y_val = tensors.y[torch.as_tensor(val_idx, device=device)]
        metrics = {"val_loss": float(loss_fn(out, y_val))}
        scores = validation_scores(tensors.task, out, y_val, n_classes)
        return metrics | {f"val_{k}": v for k, v in scores.items() if not k.startswith("n_")}

    def state() -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "schedulers": {k: v.state_dict() for k, v in schedulers.items() if v is not None},
            "scaler": scaler.state_dict(),
            "loader": generator.get_state(),
            "random": random_states(streams, device),
            "best": [best_score, best_epoch, best_state, best_metrics],
            "average": None if average is None else average.state(),
            "history": history,
        }

    saved = job.checkpoints.load_epoch() if job.checkpoints is not None else None
    epoch = first = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        for name, value in saved["schedulers"].items():
            schedulers[name].load_state_dict(value)  # type: ignore[union-attr]
        scaler.load_state_dict(saved["scaler"])
        generator.set_state(saved["loader"])
        restore_random_states(saved["random"], streams, device)
        best_score, best_epoch, best_state, best_metrics = saved["best"]
        if average is not None:
            average.load(saved["average"])
        history, epoch = saved["history"], saved["epoch"]
        first = epoch
        log.info("resuming training after epoch %d of %d", epoch, cfg.epochs)
        for row in history if on_epoch is not None else ():
            on_epoch(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})
    for epoch in range(first + 1, cfg.epochs + 1):
        model.train()
        total, count = 0.0, 0
        if corruption is not None:
            corruption.start_epoch(n_batches)
        for idx in iterate_batches(train_idx, cfg.batch_size, generator):
            inputs, lengths, y = tensors.batch(idx)
            present = None
            if corruption is not None:
                inputs, present = corruption(inputs)
            optimiser.zero_grad(set_to_none=True)
            with autocast(device):
                if objective is None:
                    loss = loss_fn(forward(model, inputs, lengths, present), y)
                else:
                    loss = objective(model, inputs, lengths, y, present)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimiser)
                clip_gradients(model, cfg.grad_clip, cfg.grad_clip_mode)
            scaler.step(optimiser)
            scaler.update()
            if per_step is not None:
                per_step.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        if scheduler is not None:
            scheduler.step()
        if average is not None:
            average.update(epoch, model)
        if job.keep == "last":
            metrics = {"train_loss": total / max(count, 1)}
            history.append({"epoch": epoch, **metrics})
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            best_epoch, best_metrics = epoch, metrics
            if job.checkpoints is not None:
                job.checkpoints.save_epoch(state)
            continue
        metrics = {"train_loss": total / max(count, 1), **validate()}
        if plateau is not None:
            plateau.step(metrics["val_loss"])
        history.append({"epoch": epoch, **metrics})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        score = sign * metrics[key]
        score = -np.inf if np.isnan(score) else score  # e.g. non-zero Acc-2 with all-zero truth
        if average is None:  # with an average there is no epoch to pick, copy or stop at
            if best_state is None or score > best_score:
                best_score, best_epoch, best_metrics = score, epoch, metrics
                best_state = copy.deepcopy(model.state_dict())
            elif cfg.patience and epoch - best_epoch >= cfg.patience:
                break
        if job.checkpoints is not None:
            job.checkpoints.save_epoch(state)
    if average is not None:
        assert average.mean is not None  # the last epoch is always averaged
        model.load_state_dict(average.mean)
        best_epoch = epoch
        if job.keep != "last":
            best_metrics = {"train_loss": history[-1]["train_loss"], **validate()}
    if job.keep == "last" or average is not None:
        best_state = copy.deepcopy(model.state_dict())
    assert best_state is not None  # at least one epoch ran (epochs >= 1)
    model.load_state_dict(best_state)
    return FitResult(best_epoch, best_metrics, epoch, _to_cpu(best_state), history)


def make_optimiser(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (L2 decay through the gradient) or AdamW (decoupled decay) over trainable weights."""
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    return kind(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.lr,
        betas=(cfg.beta1, 0.999),
        weight_decay=cfg.weight_decay,
    )


def cosine_lambda(
    cfg: TrainConfig, total_steps: int, steps_per_epoch: int
) -> Callable[[int], float]:
    """LR factor per optimiser step: linear warm-up over `warmup_epochs` (step s of W gets
    (s + 1) / W), then a half cosine from 1 down to min_lr / lr at the last step."""
    warm = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps)
    floor = cfg.min_lr / cfg.lr

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        span = max(total_steps - warm - 1, 1)
        progress = min((step - warm) / span, 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def task_loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(model output, y) -> the default training loss: CE on logits, L1 on the one output; for
    classification_valence CE on all but the last output plus MSE of the last one against the
    valence, over the rows whose valence is known (MER2023: both heads, equal weights)."""
    if task == "regression":
        l1 = nn.L1Loss()
        return lambda out, y: l1(out.squeeze(-1).float(), y)
    if task == "classification_valence":
        return class_and_valence_loss
    return nn.CrossEntropyLoss()


def class_and_valence_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(out[:, :-1], class) + MSE(out[:, -1], valence) over rows with a known valence."""
    loss = nn.functional.cross_entropy(out[:, :-1], y[:, 0].long())
    known = torch.isfinite(y[:, 1])
    if bool(known.any()):
        loss = loss + nn.functional.mse_loss(out[known, -1].float(), y[known, 1])
    return loss


def validation_scores(
    task: str, out: torch.Tensor, y: torch.Tensor, n_classes: int
) -> dict[str, float]:
    """The task's metrics of model outputs `[N, C]` (C = 1 for regression, classes + 1 for
    classification_valence) against y."""
    if task == "regression":
        return regression_metrics(y.cpu().numpy(), out[:, 0].cpu().numpy())
    if task == "classification_valence":
        truth, pred = y.cpu().numpy(), out.cpu().numpy()
        return valence_metrics(truth[:, 0].astype(np.int64), pred[:, :-1].argmax(1), n_classes,
                               truth[:, 1], pred[:, -1])  # fmt: skip
    return classification_metrics(y.cpu().numpy(), out.argmax(1).cpu().numpy(), n_classes)


def clip_gradients(model: nn.Module, limit: float, mode: str = "norm") -> None:
    """`norm`: clip the gradient norm of each sub-network separately (NMER) or of the whole
    model; `value`: clamp every gradient entry to [-limit, limit] (MMSA/IMDer)."""
    if mode == "value":
        torch.nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], limit)
        return
    parts = model.sub_networks() if hasattr(model, "sub_networks") else {"model": model}
    for part in parts.values():
        torch.nn.utils.clip_grad_norm_(part.parameters(), limit)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    tensors: FoldTensors,
    indices: np.ndarray,
    batch_size: int = 256,
    present: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Float32 outputs `[len(indices), C]` in eval mode (dropout off), in the order given.

    C is the number of classes (logits), or 1 for a regression model (the predicted value).

    `present` holds per-row masks aligned with `indices`. Models that sample at test time
    (NMER's noise and latent) draw from a torch RNG seeded with `seed`, forked so the caller's
    random stream is untouched: the same weights give the same scores every time.
    """
    model.eval()
    out = []
    step = max(batch_size, 256)
    with torch.random.fork_rng(devices=[] if tensors.device.type == "cpu" else [tensors.device]):
        torch.manual_seed(seed)
        for start, idx in zip(range(0, len(indices), step),
                              iterate_batches(indices, step), strict=True):  # fmt: skip
            inputs, lengths, _ = tensors.batch(idx)
            mask = None
            if present is not None:
                mask = {m: torch.as_tensor(v[start : start + len(idx)], device=tensors.device)
                        for m, v in present.items()}  # fmt: skip
            with autocast(tensors.device):
                out.append(forward(model, inputs, lengths, mask).float())
    return torch.cat(out)


def _to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}
