"""What every extractor returns, and the parallel map they share.

An extractor turns a list of media files (or transcripts) into one or more named features, each
a list of per-utterance `[T, D]` arrays plus the metadata the store records with them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from robustmer.data.store import FeatureMeta

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
