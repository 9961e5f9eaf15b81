"""Training-time corruption: the evaluation protocols' code, drawn per batch from its own seed.

`models.<name>.train_corruption` in params.yaml picks one kind:

- `missing_rate`: per-sample random drop at `rate` (at least one modality kept), as in the
  `missing_rate` evaluation condition;
- `missing_pattern`: one of the six MMIN/NMER patterns per sample (tri-modal models only);
- `feature_noise`: with `probability`, a modality of a batch gets diffusion-style noise at one
  timestep t ~ U{0..num_steps-1} shared by the batch (the NMER scheduler's rule);
- `imder_schedule`: IMDer's released per-BATCH schedule at `rate` (the first batches of every
  epoch lose one or two modalities, one random pattern per batch; tri-modal models only).

The generator is seeded from the fold's training seed and a name of its own, so adding
corruption never shifts the weight initialisation or the batch order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from robustmer import MODALITIES
from robustmer.config import ModelSpec
from robustmer.corruption import masks
from robustmer.corruption.feature_noise import add_noise, schedule
from robustmer.errors import ConfigError
from robustmer.seeding import derive_seed


class TrainingCorruption:
    """Callable `(inputs) -> (inputs, present)` applied to each training batch."""

    def __init__(self, cfg: Mapping[str, Any], modalities: Sequence[str], seed: int):
        self.kind = str(cfg["kind"])
        self.cfg = dict(cfg)
        self.modalities = [m for m in MODALITIES if m in modalities]
        self.seed = seed
        self.rng = np.random.default_rng(derive_seed(seed, "train_corruption"))
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "train_noise"))
        self._kept = np.full(1, len(MODALITIES), dtype=np.int64)
        self._batch = 0
        tri_modal = ("missing_pattern", "imder_schedule")
        if self.kind in tri_modal and len(self.modalities) != len(MODALITIES):
            raise ConfigError(
                f"train_corruption {self.kind} needs a model with audio, video and text "
                f"(this one reads {self.modalities}); use missing_rate instead"
            )
        if self.kind == "feature_noise":
            self.schedule = schedule(self.cfg["schedule"], self.cfg["num_steps"])

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, modalities: Sequence[str], seed: int
    ) -> TrainingCorruption | None:
        cfg = spec.train_corruption
        if not cfg or cfg.get("kind", "none") == "none":
            return None
        return cls(cfg, modalities, seed)

    def start_epoch(self, n_batches: int) -> None:
        """Called by the training loop before each epoch (the IMDer schedule is per epoch)."""
        self._batch = 0
        if self.kind == "imder_schedule":
            self._kept = masks.imder_batch_kept(n_batches, self.cfg["rate"])

    def __call__(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        n = len(next(iter(inputs.values())))
        if self.kind == "feature_noise":
            return self._noise(inputs), None
        if self.kind == "imder_schedule":
            kept = int(self._kept[min(self._batch, len(self._kept) - 1)])
            self._batch += 1
            row = np.ones(len(MODALITIES), dtype=bool)
            if kept < len(MODALITIES):  # complete batches draw nothing, as released
                row[:] = False
                row[self.rng.choice(len(MODALITIES), size=kept, replace=False)] = True
            present = np.tile(row, (n, 1))
        elif self.kind == "missing_rate":
            present = masks.random_drop(n, self.cfg["rate"], self.rng, len(self.modalities))
        else:
            present = masks.random_pattern(n, self.rng)
        device = next(iter(inputs.values())).device
        return dict(inputs), {
            m: torch.as_tensor(present[:, j], device=device) for j, m in enumerate(self.modalities)
        }

    def validation_masks(self, n: int) -> dict[str, np.ndarray] | None:
        """Fixed masks for `n` validation rows (the same every epoch), or None for noise kinds.

        Model selection then scores the model under the corruption it is trained for, as NMER
        selects on its pattern-expanded validation set.
        """
        if self.kind == "feature_noise":
            return None
        draw = np.random.default_rng(derive_seed(self.seed, "validation_masks"))
        if self.kind == "imder_schedule":  # the released code runs the same schedule on valid
            present = masks.imder_batch_schedule(
                n, self.cfg.get("batch_size", 32), self.cfg["rate"], draw
            )
        elif self.kind == "missing_rate":
            present = masks.random_drop(n, self.cfg["rate"], draw, len(self.modalities))
        else:
            present = masks.random_pattern(n, draw)
        return {m: present[:, j] for j, m in enumerate(self.modalities)}

    def _noise(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(inputs)
        for m in self.modalities:
            if self.rng.random() >= self.cfg["probability"]:
                continue
            t = int(self.rng.integers(0, self.schedule.num_steps))
            out[m] = add_noise(inputs[m], t, self.schedule, self.cfg["noise"], self.generator)
        return out
