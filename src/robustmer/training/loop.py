"""The one training loop every model uses: device, AMP, Adam, early stopping, best-epoch weights.

Deterministic by construction: the caller seeds torch once per fold (weights and dropout) and
the loop shuffles with its own `torch.Generator` seeded from the same fold seed, so the same
params give the same weights and metrics on the same machine.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robustmer.config import TrainConfig
from robustmer.corruption.training import TrainingCorruption
from robustmer.evaluation.metrics import classification_metrics
from robustmer.models.missing import forward
from robustmer.training.data import FoldTensors, iterate_batches

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    """`auto` -> the first CUDA device if there is one, else CPU; `cuda[:N]` must exist."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            from robustmer.errors import ConfigError

            raise ConfigError(f"device: {name} but torch sees no CUDA GPU; use `device: auto`")
        # Deterministic cuBLAS (torch.use_deterministic_algorithms) needs this workspace setting.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


def configure_threads(cfg: TrainConfig, device: torch.device) -> None:
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: nn.Module,
    tensors: FoldTensors,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    n_classes: int,
    seed: int,
    on_epoch: EpochCallback | None = None,
    corruption: TrainingCorruption | None = None,
) -> FitResult:
    """Train with Adam; after each epoch score the validation rows and keep the best weights.

    The best epoch maximises `cfg.selection_metric` on validation (ties keep the earlier epoch);
    with `cfg.patience > 0` training stops once that many epochs pass without improvement.
    Epochs are numbered from 1; `on_epoch(epoch, metrics)` receives train_loss, val_loss and
    val_<metric> for every epoch. `corruption` (missing modalities or feature noise drawn per
    batch from its own seed stream) applies to training batches only; validation stays clean.
    """
    device = tensors.device
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    key = f"val_{cfg.selection_metric}"

    best_score, best_epoch, best_state = -np.inf, 0, None
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for idx in iterate_batches(train_idx, cfg.batch_size, generator):
            inputs, lengths, y = tensors.batch(idx)
            present = None
            if corruption is not None:
                inputs, present = corruption(inputs)
            optimiser.zero_grad(set_to_none=True)
            with _autocast(device):
                loss = loss_fn(forward(model, inputs, lengths, present), y)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        logits = predict_logits(model, tensors, val_idx, cfg.batch_size)
        y_val = tensors.labels[torch.as_tensor(val_idx, device=device)]
        val_loss = float(loss_fn(logits, y_val))
        scores = classification_metrics(
            y_val.cpu().numpy(), logits.argmax(1).cpu().numpy(), n_classes
        )
        metrics = {"train_loss": total / max(count, 1), "val_loss": val_loss}
        metrics |= {f"val_{k}": v for k, v in scores.items() if k != "n_samples"}
        history.append({"epoch": epoch, **metrics})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if metrics[key] > best_score:
            best_score, best_epoch, best_metrics = metrics[key], epoch, metrics
            best_state = copy.deepcopy(model.state_dict())
        elif cfg.patience and epoch - best_epoch >= cfg.patience:
            break
    assert best_state is not None  # at least one epoch ran (epochs >= 1)
    model.load_state_dict(best_state)
    return FitResult(best_epoch, best_metrics, epoch, _to_cpu(best_state), history)


@torch.no_grad()
def predict_logits(
    model: nn.Module, tensors: FoldTensors, indices: np.ndarray, batch_size: int = 256
) -> torch.Tensor:
    """Float32 logits `[len(indices), C]` in eval mode (dropout off), in the order given."""
    model.eval()
    out = []
    for idx in iterate_batches(indices, max(batch_size, 256)):
        inputs, lengths, _ = tensors.batch(idx)
        with _autocast(tensors.device):
            out.append(model(inputs, lengths).float())
    return torch.cat(out)


def predict_proba(
    model: nn.Module, tensors: FoldTensors, indices: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    return torch.softmax(predict_logits(model, tensors, indices, batch_size), 1).cpu().numpy()


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}
