"""Clean shutdown on SIGINT and SIGTERM: the stage unwinds, its cleanup runs, the exit code says so.

Python's default for SIGTERM ends the process at once: no `finally`, no MLflow run ended, worker
processes left behind. `stop_on_signals` turns both signals into `errors.Interrupted` in the main
thread, so a stage unwinds exactly as on Ctrl-C. A second signal during that cleanup is noted
and ignored (SLURM follows up with SIGKILL after its grace period anyway), so the cleanup that
protects the previous outputs is never cut short by an impatient sender.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from robustmer.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


_received: list[int] = []
_deferred: list[int] = [0]  # depth of `critical` blocks now open


@contextmanager
def critical() -> Iterator[None]:
    """A few steps that must not be cut in half (swapping a folder in): a signal that arrives
    meanwhile is raised when the block ends."""
    _deferred[0] += 1
    try:
        yield
    finally:
        _deferred[0] -= 1
    if not _deferred[0] and _received:
        sig = signal.Signals(_received[0])
        raise Interrupted(sig, sig.name)


def stop_on_signals() -> None:
    """Install the handlers (main thread only; a no-op elsewhere, e.g. inside a worker thread)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if _received:
            print(f"[robustmer] {name} received while stopping; finishing the cleanup",
                  file=sys.stderr)  # fmt: skip
            return
        _received.append(signum)
        if not _deferred[0]:
            raise Interrupted(signum, name)

    try:
        for signum in SIGNALS:
            signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass


def received() -> signal.Signals | None:
    """The signal that is stopping this process, if one is (click turns the exception into
    its own exit, so the CLI asks here rather than catching it)."""
    return signal.Signals(_received[0]) if _received else None


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + signum
