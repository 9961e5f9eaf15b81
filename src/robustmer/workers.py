"""Worker processes that never outlive the stage that started them.

`extract`, `corrupt` and the built-in corpus render over a process pool. Two ways to leave
orphans are closed here: on any exception or interrupt in the parent the workers are terminated
(not left to finish their chunks while the parent waits at exit), and each worker asks the
kernel (Linux `PR_SET_PDEATHSIG`) to be killed when its parent dies, which also covers a SIGKILL
of the parent that no handler can see. Workers ignore SIGINT: Ctrl-C reaches the whole process
group, and the parent alone decides how to stop.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _init_worker(
    parent: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def worker_pool(
    workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers end with the block: joined on success, killed otherwise."""
    pool = ProcessPoolExecutor(
        workers, initializer=_init_worker, initargs=(os.getpid(), initializer, tuple(initargs))
    )
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
    pool.shutdown()


def terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel what is queued and end the workers now (their current items are abandoned)."""
    # The executor keeps no public list of its processes; `_processes` has held them since 3.2.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
