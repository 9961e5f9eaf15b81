"""What every extractor returns, and the parallel map they share.

An extractor turns a list of media files (or transcripts) into one or more named features, each
a list of per-utterance `[T, D]` arrays plus the metadata the store records with them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from tqdm import tqdm

from robustmer.data.store import FeatureMeta, Level
from robustmer.errors import ConfigError, DataError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ExtractedFeature:
    """One feature for all utterances, in manifest order."""

    meta: FeatureMeta
    sequences: list[np.ndarray]


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    desc: str,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
) -> list[R]:
    """`[fn(x) for x in items]` over `workers` processes, in order, with a progress bar.

    Each worker builds its own heavy state (openSMILE, the Haar cascade) in `initializer`, so
    nothing unpicklable crosses process boundaries. With one worker it runs in-process.
    """
    disable = os.environ.get("ROBUSTMER_NO_PROGRESS") == "1" or None
    if workers <= 1 or len(items) < 2 * workers:
        if initializer is not None:
            initializer(*initargs)
        return [fn(x) for x in tqdm(items, desc=desc, unit="file", disable=disable)]
    chunksize = max(1, len(items) // (workers * 8))
    with ProcessPoolExecutor(workers, initializer=initializer, initargs=tuple(initargs)) as pool:
        return list(
            tqdm(
                pool.map(fn, items, chunksize=chunksize),
                total=len(items),
                desc=desc,
                unit="file",
                disable=disable,
            )
        )


class MediaError(DataError):
    """One media file (or transcript) cannot be turned into features; names the item and why."""

    def __init__(self, item: str, reason: str):
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason


@dataclass(frozen=True)
class OutputSpec:
    """One feature an extractor entry writes: `<modality>/<entry name><suffix>` in the store."""

    suffix: str  # "" or e.g. "_functionals", "_lld", "_mean"
    level: Level  # "utterance" ([1, D] per item) or "frame" ([T, D] per item)
    dim: int
    frame_rate: float | None = None
    feature_names: list[str] | None = None


class Extractor(ABC):
    """One configured extractor entry of params.yaml `extract.<modality>.<name>`.

    Life cycle: built in the main process from (name, cfg, device); `setup()` loads heavy state
    (once per worker process, so nothing unpicklable crosses processes); `outputs()` (after
    setup) declares the features; `extract(items)` maps a batch of items (media `Path`s for
    audio and video, transcript `str`s for text) to one `{suffix: array}` dict per item, or
    raises `MediaError` naming the bad item. `cache_key()` is everything that changes the
    numbers (kind, params, library and model versions): it keys the per-item cache.
    """

    modality: ClassVar[str]
    kind: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}  # every accepted cfg key (besides `kind`) -> default
    batch_size: int = 1  # items per `extract` call (text models batch; media go one by one)

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        given = {k: v for k, v in cfg.items() if k != "kind"}
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"extract.{self.modality}.{name}: unknown option(s) {unknown} for kind "
                f"{self.kind!r} (known: {sorted(self.defaults)})"
            )
        self.name = name
        self.cfg = {**self.defaults, **given}
        self.device = device

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models and configs (called in each worker before the first `extract`)."""

    @abstractmethod
    def version(self) -> str:
        """Library / model version string recorded in the store and in the cache key."""

    @abstractmethod
    def outputs(self) -> list[OutputSpec]:
        """The features this entry writes (dims may need `setup()` first)."""

    @abstractmethod
    def extract(self, items: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """Per item, `{suffix: float32 array}` with `[1, D]` (utterance) or `[T, D]` (frame)."""

    def cache_key(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.cfg, "version": self.version()}
