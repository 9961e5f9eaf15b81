"""Fold checkpoints: weights, normaliser and a plain-data description, nothing pickled.

`seed_<s>/fold_<k>.pt` (one per training seed and fold) is a dict of tensors, strings, numbers,
lists and dicts only, so it loads with `torch.load(weights_only=True)`: opening a checkpoint can
never run code, and it stays readable when classes in this package are renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustmer.errors import DataError
from robustmer.io import atomic_path
from robustmer.paths import dataset_of
from robustmer.signals import critical

CHECKPOINT_FORMAT = 1


def checkpoint_path(model_dir: Path, fold: int, seed: int) -> Path:
    return Path(model_dir) / f"seed_{seed}" / f"fold_{fold}.pt"


def save_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    normaliser: dict[str, dict[str, torch.Tensor]],
    meta: dict[str, Any],
) -> None:
    """Write atomically; `meta` holds spec, classes, input dims, levels, fold, best epoch."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "normaliser": normaliser,
        "meta": meta,
    }
    # Through a file object: given a path, torch names the archive's entries after the
    # (random) temporary file, so identical weights would give different bytes and hashes.
    with critical(), atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)  # a signal meanwhile is raised once the file is complete


def load_checkpoint(path: Path, model: str) -> dict[str, Any]:
    """Load with weights_only=True; a missing or unreadable file is a DataError with the fix."""
    path = Path(path)
    ds = dataset_of(path) or "<dataset>"
    fix = (
        f"run `robustmer train {model} --dataset {ds}` (or `dvc repro train@{ds}-{model}`) "
        "to rebuild it"
    )
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found; {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        # torch's own message suggests weights_only=False, which is exactly wrong here.
        raise DataError(
            f"{path}: checkpoint is corrupt or not a robustmer checkpoint "
            f"({type(exc).__name__}); {fix}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a robustmer checkpoint (format {CHECKPOINT_FORMAT}); {fix}")
    for key in ("state_dict", "normaliser", "meta"):
        if key not in payload:
            raise DataError(f"{path}: checkpoint lacks {key!r}; {fix}")
    return payload
