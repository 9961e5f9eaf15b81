"""The uniform mean of a model's weights over the last epochs of a fixed-length run.

Why: on the real samples, choosing one epoch on a single validation speaker (about 50
utterances) is noisy enough to put the MLP baselines under a logistic regression on the same
features (docs/linear.md). Averaging the weights after each of the last `n` epochs (stochastic
weight averaging at a constant learning rate, Izmailov et al. 2018) needs no validation choice
and lands in a flatter region than any one of the epochs it averages.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightAverage:
    """Running mean of `model.state_dict()` after each of the last `last` epochs (or all).

    Floating tensors (weights, biases, normalisation statistics) are averaged in their own dtype
    with the incremental mean `m += (w - m) / k`; integer buffers (e.g. BatchNorm's batch
    counter) keep the last value. BatchNorm statistics are averaged, not recomputed.
    """

    def __init__(self, last: int, epochs: int):
        if last < 1:
            raise ValueError(f"average_last must be >= 1, got {last}")
        self.first = max(1, epochs - last + 1)  # a shorter run averages all its epochs
        self.count = 0
        self.mean: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, model: nn.Module) -> None:
        """Fold the weights after `epoch` into the mean (no-op before the averaged epochs)."""
        if epoch < self.first:
            return
        self.count += 1
        state = model.state_dict()
        if self.mean is None:
            self.mean = {k: v.detach().clone() for k, v in state.items()}
            return
        for name, value in state.items():
            if value.is_floating_point():
                self.mean[name] += (value.detach() - self.mean[name]) / self.count
            else:
                self.mean[name] = value.detach().clone()

    def state(self) -> dict[str, Any]:
        """What a resumable epoch checkpoint keeps (training/resume.py)."""
        return {"count": self.count, "mean": self.mean}

    def load(self, saved: dict[str, Any]) -> None:
        self.count, self.mean = saved["count"], saved["mean"]
