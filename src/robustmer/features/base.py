"""What every extractor returns, and the parallel map they share.

An extractor turns a list of media files (or transcripts) into one or more named features, each
a list of per-utterance `[T, D]` arrays plus the metadata the store records with them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from robustmer.data.store import FeatureMeta, Level
from robustmer.errors import ConfigError, DataError
from robustmer.progress import progress
from robustmer.workers import worker_pool

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ExtractedFeature:
    """One feature for all utterances, in manifest order."""

    meta: FeatureMeta
    sequences: list[np.ndarray]


@dataclass(frozen=True)
class ItemError:
    """One item's failure, carried back from a worker as a value so the other items go on.

    A plain dataclass rather than the exception itself: exceptions with extra constructor
    arguments (MediaError) do not survive pickling between processes.
    """

    item: str
    reason: str

    @classmethod
    def from_exception(cls, item: Any, exc: BaseException) -> ItemError:
        if isinstance(exc, MediaError):
            return cls(exc.item, exc.reason)
        if isinstance(exc, DataError):
            return cls(str(item), str(exc))
        return cls(str(item), f"{type(exc).__name__}: {exc}")


class _Guarded:
    """`fn` with the given exception types turned into ItemError values (picklable)."""

    def __init__(self, fn: Callable[[Any], Any], errors: tuple[type[BaseException], ...]):
        self.fn, self.errors = fn, errors

    def __call__(self, item: Any) -> Any:
        try:
            return self.fn(item)
        except self.errors as exc:
            return ItemError.from_exception(item, exc)


def _name(item: Any) -> str:
    """An item in a message; a batch of items (a list) by its members."""
    return ", ".join(map(str, item)) if isinstance(item, list | tuple) else str(item)


def _run_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(x) for x in chunk]


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    desc: str,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    *,
    errors: tuple[type[BaseException], ...] = (),
    on_result: Callable[[int, Any], None] | None = None,
    chunksize: int | None = None,
    unit: str = "file",
) -> list[Any]:
    """`[fn(x) for x in items]` over `workers` processes, in order, with a progress bar.

    Each worker builds its own heavy state (openSMILE, the Haar cascade, a model) in
    `initializer`, so nothing unpicklable crosses process boundaries. With one worker (or too
    few items to be worth a pool) it runs in-process. Exceptions of the `errors` types come
    back as `ItemError` values in the item's place instead of stopping the map; `on_result(i,
    value)` runs in this process as each result arrives (completion order), so a caller can
    persist finished work before the map is over. On any other exception (or an interrupt) the
    queued items are cancelled, the workers ended (robustmer/workers.py) and the exception
    propagates.
    """
    call: Callable[[Any], Any] = _Guarded(fn, tuple(errors)) if errors else fn
    out: list[Any] = [None] * len(items)
    bar = progress(len(items), desc, unit)

    def done(index: int, value: Any) -> None:
        out[index] = value
        if on_result is not None:
            on_result(index, value)
        bar.update(1)

    try:
        if workers <= 1 or len(items) < 2 * workers:
            if initializer is not None:
                initializer(*initargs)
            for i, x in enumerate(items):
                done(i, call(x))
            return out
        size = chunksize or max(1, len(items) // (workers * 8))
        starts = range(0, len(items), size)
        with worker_pool(workers, initializer, initargs) as pool:
            futures = {pool.submit(_run_chunk, call, list(items[s : s + size])): s for s in starts}
            for future in as_completed(futures):
                try:
                    values = future.result()
                except BrokenProcessPool as exc:
                    # Work is handed out in order, so the crash is in the first unfinished ones.
                    unfinished = [
                        start for f, start in futures.items() if not f.done() or f.exception()
                    ][: workers + 1]
                    suspects = [_name(x) for s in unfinished for x in items[s : s + size]][:10]
                    raise DataError(
                        f"{desc}: a worker process died (a crash in a decoder or model, or out "
                        f"of memory) while working on one of: {', '.join(suspects) or '?'}. "
                        "The results that had arrived are kept; remove or replace the file, or "
                        "run with one worker to see which one it is"
                    ) from exc
                for offset, value in enumerate(values):
                    done(futures[future] + offset, value)
        return out
    finally:
        bar.close()


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
