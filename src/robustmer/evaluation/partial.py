"""Resumable evaluation: the predictions of a long cell are kept until its outputs are written.

A cell scores every (level, seed, fold) of one model under one condition, and only writes its
files at the end. With a slow model (IMDer's 100-step sampler over many levels) an interruption
would throw all of that away, so each fold model's raw outputs are saved in
`<scores folder>/.<condition>.partial/` once the cell has run for `train.checkpoint_every_s`
seconds (a cheap cell writes nothing extra). A rerun with the same inputs (the trained models'
summary, the condition, the params, the code) reuses them bit for bit; other inputs discard
them. The folder is removed once the cell's files are written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robustmer.io import read_json, write_json, write_npy
from robustmer.training.resume import inputs_digest, source_digest

log = logging.getLogger(__name__)


def partial_dir(scores_file: Path) -> Path:
    return scores_file.with_name(f".{scores_file.stem}.partial")


class PredictionCache:
    """Raw outputs per key, saved once the cell is older than `every_s` seconds."""

    def __init__(self, folder: Path, inputs: Mapping[str, Any], every_s: float):
        self.folder = Path(folder)
        self.every_s = every_s
        self.started = time.monotonic()
        digest = inputs_digest({**inputs, "source": source_digest()})
        stamp = self.folder / "inputs.json"
        if self.folder.exists():
            kept = read_json(stamp).get("digest") if stamp.is_file() else None
            if kept != digest:
                shutil.rmtree(self.folder)
            else:
                n = len(list(self.folder.glob("*.npy")))
                log.info("%s: resuming an interrupted evaluation (%d prediction(s) kept)",
                         self.folder, n)  # fmt: skip
        self.digest = digest
        self.reused = 0

    def get(self, key: str, compute: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        """The saved value of `key`, or `compute(*args)` (saved if the cell is old enough)."""
        path = self.folder / f"{key}.npy"
        if path.is_file():
            self.reused += 1
            return np.load(path, allow_pickle=False)
        value = compute(*args)
        if time.monotonic() - self.started >= self.every_s:
            if not self.folder.exists():
                write_json(self.folder / "inputs.json", {"digest": self.digest})
            write_npy(path, np.asarray(value))
        return value

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
