"""Resumable training: the model folder is built aside, finished units kept, epochs checkpointed.

`robustmer train` (and `pretrain`) writes into `models/.<name>.building/` and swaps it in for
`models/<name>/` only once every (seed, fold) unit is done, so an interrupted run never touches
the previous model. What a rerun needs to resume lives in `<building>/resume/`:

- `inputs.json`: the digest of everything the units depend on (the run's params, the features'
  content hash, the stage-1 summary, the package source, the device). A rerun with another
  digest starts from scratch; with the same digest it keeps what is there.
- `units/seed_<s>_fold_<k>.json`: a finished unit's summary row, written after its checkpoint;
  a rerun skips the unit.
- `seed_<s>/fold_<k>/fit_<i>.done.pt`: the i-th call of the shared loop in that unit, finished:
  its result and the random states at its end, so a recipe that fits several times (SEMI's
  rounds) replays the earlier fits without training them again.
- `seed_<s>/fold_<k>/fit_<i>.epoch.pt`: the fit in progress at its last saved epoch: model,
  optimiser, schedulers, scaler, every random stream, early-stopping state and history.

Everything is restored bit for bit, so a resumed run ends with the same weights and checkpoint
bytes as an uninterrupted one. Files are written atomically and loaded with weights_only=True
(a file in a model folder can never run code).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustmer.io import atomic_path, read_json, swap_dir, write_json
from robustmer.signals import critical

log = logging.getLogger(__name__)

RESUME_DIR = "resume"
INPUTS_FILE = "inputs.json"

# A random stream a fit draws from besides torch's and NumPy's global ones.
Stream = torch.Generator | np.random.Generator


def building_dir(target: Path) -> Path:
    """Where the next version of `target` is built: a hidden sibling (same filesystem)."""
    return target.with_name(f".{target.name}.building")


@functools.cache
def source_digest() -> str:
    """sha256 over the package's own source and data files: a code change discards a build."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in {".py", ".yaml"} and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def inputs_digest(inputs: Mapping[str, Any]) -> str:
    """A stable digest of JSON-able inputs (keys sorted)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Building:
    """The folder a stage builds into, and the resume state kept in it until the swap."""

    def __init__(self, target: Path, digest: str):
        self.target = Path(target)
        self.root = building_dir(self.target)
        self.resume = self.root / RESUME_DIR
        stamp = self.resume / INPUTS_FILE
        if self.root.exists():
            kept = read_json(stamp).get("digest") if stamp.is_file() else None
            if kept == digest:
                n = len(list((self.resume / "units").glob("*.json")))
                log.info("%s: resuming an interrupted run (%d unit(s) done)", self.target, n)
            else:
                log.info("%s: discarding a partial build of other inputs", self.target)
                shutil.rmtree(self.root)
        self.resume.mkdir(parents=True, exist_ok=True)
        write_json(stamp, {"digest": digest})

    def unit_file(self, fold: int, seed: int) -> Path:
        return self.resume / "units" / f"seed_{seed}_fold_{fold}.json"

    def done_unit(self, fold: int, seed: int) -> dict[str, Any] | None:
        """The summary row of a finished unit, if this build has one."""
        path = self.unit_file(fold, seed)
        return read_json(path) if path.is_file() else None

    def finish_unit(self, fold: int, seed: int, row: Mapping[str, Any]) -> None:
        write_json(self.unit_file(fold, seed), row)
        shutil.rmtree(self.unit_dir(fold, seed), ignore_errors=True)

    def unit_dir(self, fold: int, seed: int) -> Path:
        return self.resume / f"seed_{seed}" / f"fold_{fold}"

    def fit_checkpoints(self, fold: int, seed: int, index: int, every_s: float) -> FitCheckpoints:
        return FitCheckpoints(self.unit_dir(fold, seed), index, every_s)

    def swap_in(self) -> None:
        """Drop the resume state and put the finished folder in place of the target."""
        shutil.rmtree(self.resume)
        swap_dir(self.root, self.target)


class FitCheckpoints:
    """The epoch checkpoint and the finished record of one call of the training loop."""

    def __init__(self, folder: Path, index: int, every_s: float):
        self.epoch_path = folder / f"fit_{index}.epoch.pt"
        self.done_path = folder / f"fit_{index}.done.pt"
        self.every_s = every_s
        self._last = time.monotonic()

    def load_epoch(self) -> dict[str, Any] | None:
        return _load(self.epoch_path)

    def save_epoch(self, payload: Any) -> None:
        """Save at most every `every_s` seconds (0: every epoch); `payload` is called lazily."""
        if self.every_s and time.monotonic() - self._last < self.every_s:
            return
        _save(self.epoch_path, payload())
        self._last = time.monotonic()

    def load_done(self) -> dict[str, Any] | None:
        return _load(self.done_path)

    def save_done(self, payload: dict[str, Any]) -> None:
        _save(self.done_path, payload)
        self.epoch_path.unlink(missing_ok=True)


def random_states(streams: Sequence[Stream], device: torch.device) -> dict[str, Any]:
    """Every random state a fit moves: Python's, NumPy's, torch's (and CUDA's), and `streams`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "streams": [_stream_state(s) for s in streams],
    }


def restore_random_states(
    state: Mapping[str, Any], streams: Sequence[Stream], device: torch.device
) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    for stream, saved in zip(streams, state["streams"], strict=True):
        if isinstance(stream, torch.Generator):
            stream.set_state(saved)
        else:
            stream.bit_generator.state = saved


def _stream_state(stream: Stream) -> Any:
    if isinstance(stream, torch.Generator):
        return stream.get_state()
    return stream.bit_generator.state


def _save(path: Path, payload: dict[str, Any]) -> None:
    # A signal inside torch.save can surface as torch's own error; the save is short: finish it.
    with critical(), atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def _load(path: Path) -> dict[str, Any] | None:
    """A saved state, or None when there is none or it is unreadable (start that fit over)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated by a crash mid-write of an older format: start over
        log.warning("%s: unreadable resume state (%s); training that part again", path, exc)
        return None
