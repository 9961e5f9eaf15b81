"""Retry MLflow calls that find the SQLite store locked: exponential backoff, jitter, a bound.

Snakemake jobs (or `dvc queue` workers) logging to one `sqlite:///mlflow.db` take turns at
SQLite's single write lock. MLflow already lets each statement wait up to 20 s for it (it sets
`PRAGMA busy_timeout = 20000` on every session); past that, or when SQLite refuses to wait
because waiting could deadlock, the call fails with "database is locked". Such a call changed
nothing (MLflow rolls the transaction back), so running it again is safe. The pauses grow and are
jittered so that waiting jobs do not all retry in the same instant, and the total wait is
bounded: a store that stays locked ends in one clear error that says to use a tracking server.

No MLflow import here: errors are recognised by class name and message, whichever layer
(sqlite3, SQLAlchemy, MLflow's own or REST exception) wrapped them.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from robustmer.errors import ConfigError, RobustmerError

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_WAIT_ENV = "ROBUSTMER_MLFLOW_MAX_WAIT_S"
DEFAULT_MAX_WAIT_S = 300.0
# sqlite3's messages for SQLITE_BUSY / SQLITE_LOCKED; MLflow and SQLAlchemy keep them in theirs.
_LOCKED_MESSAGES = ("database is locked", "database table is locked", "database schema is locked")
_LOCKED_TYPES = frozenset({"OperationalError", "MlflowException"})

_sleep = time.sleep  # patched in tests
retried_calls = 0  # retries made in this process, for diagnostics


class TrackingStoreBusy(RobustmerError):
    """The tracking store stayed locked past the retry bound; nothing was written."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: pauses double from `first_delay_s` up to `max_delay_s`."""

    max_wait_s: float = DEFAULT_MAX_WAIT_S
    first_delay_s: float = 0.1
    max_delay_s: float = 10.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The default policy, with the total bound from `$ROBUSTMER_MLFLOW_MAX_WAIT_S` if set."""
        raw = os.environ.get(MAX_WAIT_ENV, "").strip()
        if not raw:
            return cls()
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise ConfigError(f"{MAX_WAIT_ENV}={raw!r}: expected a number of seconds >= 0")
        return cls(max_wait_s=value)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Pause before retry `attempt` (0-based): half the exponential step, plus random half.

        The fixed half guarantees backoff; the random half spreads jobs that failed together.
        """
        step = min(self.max_delay_s, self.first_delay_s * 2**attempt)
        return step / 2 + (rng or random).uniform(0, step / 2)


def is_locked(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is SQLite lock contention."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {cls.__name__ for cls in type(current).__mro__}
        if names & _LOCKED_TYPES and any(m in str(current).lower() for m in _LOCKED_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def _advice(uri: str) -> str:
    if uri.startswith("sqlite:"):
        return (
            "Too many jobs are writing to one SQLite file (worse on a network filesystem). "
            "Start one tracking server, e.g. `mlflow server --backend-store-uri "
            f"{uri} --port 5000`, and run the jobs with "
            "MLFLOW_TRACKING_URI=http://127.0.0.1:5000; or run fewer jobs at once"
        )
    return "The tracking server's database is overloaded; back the server with PostgreSQL or MySQL"


def with_retry(
    fn: Callable[..., T],
    uri: str,
    what: str = "",
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
) -> Callable[..., T]:
    """`fn`, retried while it fails with a locked store; `TrackingStoreBusy` past the bound."""
    policy = policy or RetryPolicy.from_env()
    action = what or getattr(fn, "__name__", "an MLflow call")

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        global retried_calls
        start = time.monotonic()
        slept = 0.0
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not is_locked(exc):
                    raise
                # Sleeps count even when patched out, so the bound holds in tests too.
                waited = max(time.monotonic() - start, slept)
                pause = policy.delay(attempt, rng)
                attempt += 1
                if waited + pause > policy.max_wait_s:
                    last = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                    raise TrackingStoreBusy(
                        f"MLflow store {uri} stayed locked for {waited:.0f} s ({attempt} "
                        f"attempts at {action}). {_advice(uri)}; or raise {MAX_WAIT_ENV} "
                        f"(now {policy.max_wait_s:g}). Last error: {type(exc).__name__}: {last}"
                    ) from exc
                retried_calls += 1
                log.log(
                    logging.WARNING if attempt >= 3 else logging.DEBUG,
                    "MLflow store %s locked during %s (attempt %d); retrying in %.2f s",
                    uri, action, attempt, pause,
                )  # fmt: skip
                _sleep(pause)
                slept += pause

    return call


class RetryingClient:
    """An `MlflowClient` whose every method call goes through `with_retry`.

    One wrapper for every call site: a write added later is covered without thinking about it.
    Reads are retried too; they can also meet a lock held past the busy timeout.
    """

    def __init__(self, client: Any, uri: str, policy: RetryPolicy | None = None):
        self._client = client
        self.uri = uri
        self.policy = policy or RetryPolicy.from_env()

    def with_policy(self, policy: RetryPolicy) -> RetryingClient:
        """The same client under another bound (a short one for clean-up after a failure)."""
        return RetryingClient(self._client, self.uri, policy)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return with_retry(attr, self.uri, name, self.policy) if callable(attr) else attr
