"""Missing at the frame level: `temporal_drop` removes a share of each sequence's frames.

Models that read frame sequences get the shortened sequence; models that read utterance vectors
get the mean of the frames that are left, so every model loses the same frames. A feature the
store holds at utterance level (functionals, sentence embeddings) has no frames to remove and is
unchanged. Which frames go is drawn per sample and modality from the record's seed, so every
model and fold sees the same ones; at least one frame of a non-empty sequence is always kept.
The two modes follow the time-series corruptions of MultiBench and TFR-Net (random and
structured temporal missingness), with the frames removed rather than zero-filled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from robustmer import MODALITIES
from robustmer.config import feature_list
from robustmer.data.model_data import ModalityInput, ModelData, side_by_side
from robustmer.data.store import FeatureStore, frame_means

log = logging.getLogger(__name__)
MODES = ("random", "block")


def kept_frames(n: int, fraction: float, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Indices (ascending) of the frames of an n-frame sequence that survive the drop.

    fraction * n frames (rounded half up) go, capped at n - 1: at random positions (`random`),
    or as one contiguous block starting at a uniformly drawn frame (`block`).
    """
    if mode not in MODES:
        raise ValueError(f"temporal_drop mode {mode!r} is not one of {MODES}")
    drop = min(int(fraction * n + 0.5), max(n - 1, 0))
    if drop <= 0:
        return np.arange(n)
    if mode == "random":
        return np.sort(rng.choice(n, size=n - drop, replace=False))
    start = int(rng.integers(0, n - drop + 1))
    return np.concatenate([np.arange(start), np.arange(start + drop, n)])


def drop_sequences(
    values: np.ndarray,
    offsets: np.ndarray,
    fractions: np.ndarray,
    seeds: np.ndarray,
    mode: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The frames that survive, per utterance i (`fractions[i]`, drawn from `seeds[i]`)."""
    keep: list[np.ndarray] = []
    lengths = np.zeros(len(offsets) - 1, dtype=np.int64)
    for i in range(len(lengths)):
        start, n = int(offsets[i]), int(offsets[i + 1] - offsets[i])
        index = kept_frames(n, float(fractions[i]), mode, np.random.default_rng(int(seeds[i])))
        keep.append(start + index)
        lengths[i] = len(index)
    rows = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return values[rows], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def drop_frames(
    data: ModelData,
    store: FeatureStore,
    features: Mapping[str, str | tuple[str, ...]],
    frame_inputs: bool,
    records: pd.DataFrame,
    settings: Mapping[str, Any],
) -> ModelData:
    """`data` with the level's frames removed from each listed modality's frame features.

    `records` (one level of a temporal_drop condition) give each sample's fraction and seed;
    samples without a record keep every frame. The seed of modality m is the record's seed +
    its index in MODALITIES, as feature noise derives it.
    """
    fractions = np.zeros(len(data))
    seeds = np.zeros(len(data), dtype=np.int64)
    index = records["sample_index"].to_numpy()
    fractions[index] = records["fraction"].to_numpy(dtype=float)
    seeds[index] = records["seed"].to_numpy(dtype=np.int64)
    inputs = dict(data.inputs)
    mode = str(settings.get("mode", "random"))
    for m in settings.get("modalities", MODALITIES):
        if m not in features:
            continue
        names = [f"{m}/{e}" for e in feature_list(features[m])]
        if all(store.meta(name).level != "frame" for name in names):
            log.info("temporal_drop: %s are utterance-level features; they stay as they are",
                     ", ".join(names))  # fmt: skip
            continue
        parts = []
        for name in names:
            if store.meta(name).level != "frame":
                parts.append(ModalityInput(name, "utterance", store.utterance_matrix(name)))
                continue
            values, offsets = drop_sequences(
                np.asarray(store.values(name), dtype=np.float32), store.offsets(name), fractions,
                seeds + MODALITIES.index(m), mode,
            )  # fmt: skip
            if frame_inputs and len(names) == 1:
                parts.append(ModalityInput(name, "frame", values, offsets))
            else:
                parts.append(ModalityInput(name, "utterance", frame_means(values, offsets)))
        inputs[m] = parts[0] if len(parts) == 1 else side_by_side(parts)
    return replace(data, inputs=inputs)
