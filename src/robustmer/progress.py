"""Progress that shows on a terminal and in a batch log alike.

tqdm redraws one line with carriage returns, which a terminal shows well and a SLURM or
Snakemake log file does not (tqdm turns itself off there, so a long stage printed one line per
quarter hour). On a terminal `progress` is a tqdm bar; elsewhere it logs a plain line every
`ROBUSTMER_PROGRESS_EVERY_S` seconds (default 60) and one when done. `ROBUSTMER_NO_PROGRESS=1`
silences both.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger("robustmer.progress")
T = TypeVar("T")


class LogProgress:
    """The tqdm calls the stages use (`update`, `close`), written as log lines."""

    def __init__(self, total: int, desc: str, unit: str, every_s: float):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self.started = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s and self.n < self.total:
            self._last = now
            elapsed = now - self.started
            eta = elapsed / self.n * (self.total - self.n)
            share = 100 * self.n / max(self.total, 1)
            log.info("%s: %d/%d %s(s) (%.0f%%) in %.0f s, about %.0f s left", self.desc, self.n,
                     self.total, self.unit, share, elapsed, eta)  # fmt: skip

    def close(self) -> None:
        log.info("%s: %d/%d %s(s) in %.1f s", self.desc, self.n, self.total, self.unit,
                 time.monotonic() - self.started)  # fmt: skip


def progress(total: int, desc: str, unit: str = "item") -> Any:
    """A tqdm bar on a terminal, log lines otherwise, nothing with ROBUSTMER_NO_PROGRESS=1."""
    from tqdm import tqdm

    if os.environ.get("ROBUSTMER_NO_PROGRESS") == "1":
        return tqdm(total=total, desc=desc, unit=unit, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit)
    every = float(os.environ.get("ROBUSTMER_PROGRESS_EVERY_S", "60"))
    return LogProgress(total, desc, unit, every)


def track(items: Iterable[T], total: int, desc: str, unit: str = "item") -> Iterator[T]:
    """Iterate `items` while reporting progress."""
    bar = progress(total, desc, unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
