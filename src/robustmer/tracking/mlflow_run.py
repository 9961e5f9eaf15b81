"""MLflow runs for training and evaluation: one parent run per model, one nested run per fold.

MLflow is imported inside these functions only, so `robustmer --help` and the data stages stay
fast. The tracking URI is `$MLFLOW_TRACKING_URI` if set, else `params.mlflow.tracking_uri`. For a
SQLite store, a new experiment keeps its artifacts beside the database file in
`mlruns/<experiment>/<run_id>/artifacts` (MLflow's own default is `./mlruns/<id>` relative to
whatever directory the process happens to run in).

Per-epoch metrics are buffered and sent with `log_batch` (each still with its epoch as `step`
and its own timestamp): one SQLite transaction per flush instead of one per epoch keeps the
logging cost of a CPU-sized run near zero. The buffer is flushed at the end of each fold and at
least every `flush_every_s` seconds, so a long GPU run still shows live curves.

Many jobs may log to one SQLite file at once (`snakemake --cores N`). Every MLflow call goes
through `retry.RetryingClient`, which retries "database is locked" with backoff up to a bound;
runs are started and ended with that client rather than `mlflow.start_run`/`end_run` (which
forgets a run before writing its final status, so a locked store would leave it RUNNING). The
database and experiment are created under a file lock, once before the fan-out by
`init_tracking` (`robustmer track-init`), and again harmlessly by each job.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robustmer.errors import ConfigError
from robustmer.tracking.retry import RetryingClient, RetryPolicy, with_retry

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_BATCH_LIMIT = 1000  # MLflow's maximum number of metrics in one log_batch call
_CLEANUP_WAIT_S = 30.0  # after a failure: keep what was logged, but do not hide the error long

OWNER_HOST = "robustmer.host"
OWNER_PID = "robustmer.pid"
ORPHAN_NOTE = (
    "left RUNNING by a process that was killed (SIGKILL, out of memory, node failure); "
    "marked FAILED at the next start of the same model"
)

# This process's open runs, innermost last: fold_run nests in the model_run around it.
_active: list[RunHandle] = []


def tracking_uri(params: Mapping[str, Any]) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.get("mlflow", {}).get(
        "tracking_uri", DEFAULT_TRACKING_URI
    )


def experiment_name(params: Mapping[str, Any]) -> str:
    return params.get("mlflow", {}).get("experiment", "robustmer")


def flatten_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> {"a.b.c": "value"}; lists are joined with commas."""
    if isinstance(obj, Mapping):
        out: dict[str, str] = {}
        for key, value in obj.items():
            out |= flatten_params(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(obj, list | tuple):
        return {prefix: ",".join(map(str, obj))}
    return {prefix: str(obj)}


def sqlite_artifact_location(uri: str, experiment: str) -> str | None:
    """`<db folder>/mlruns/<experiment>` as a file URI for a sqlite URI, else None (server's)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return (db.resolve().parent / "mlruns" / safe).as_uri()


@contextmanager
def _sqlite_init_lock(uri: str) -> Iterator[None]:
    """Serialise first contact with a SQLite store across processes.

    MLflow creates and migrates the tables on first use; two jobs doing that at once (Snakemake
    runs train jobs in parallel) fail with "duplicate column". The lock file lives in the
    `mlruns/` folder beside the database.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; parallel first runs may race
        yield
        return
    db = Path(uri[len("sqlite:///") :]).resolve()
    lock = db.parent / "mlruns" / f".{db.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _connect(params: Mapping[str, Any]) -> tuple[RetryingClient, str]:
    """Point MLflow at the configured store; return a retrying client and the experiment id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    name = experiment_name(params)
    policy = RetryPolicy.from_env()
    with _sqlite_init_lock(uri):
        # Creating the client creates/migrates the tables and MLflow's Default experiment.
        opened = with_retry(mlflow.MlflowClient, uri, "opening the store", policy)
        client = RetryingClient(opened(tracking_uri=uri), uri, policy)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client, client.create_experiment(
                    name, artifact_location=sqlite_artifact_location(uri, name)
                )
            except MlflowException:  # another process (without the lock) created it first
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
    if experiment.lifecycle_stage != "active":
        raise ConfigError(
            f"MLflow experiment {name!r} at {uri} is deleted; restore it "
            f"(`mlflow experiments restore`) or set mlflow.experiment to another name"
        )
    return client, experiment.experiment_id


def init_tracking(params: Mapping[str, Any]) -> str:
    """Create (or migrate) the store and the experiment; return the experiment id.

    Run once before parallel jobs start (`robustmer track-init`, Snakemake's `onstart`), so the
    slow first contact (schema migrations) is not paid by jobs queueing on the lock, and a bad
    URI or deleted experiment fails before any training. Idempotent: jobs still connect the
    same way, under the same lock.
    """
    return _connect(params)[1]


class RunHandle:
    """An open MLflow run: immediate metrics/artifacts plus buffered per-epoch metrics."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        flush_every_s: float = 10.0,
        experiment_id: str | None = None,
    ):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.flush_every_s = flush_every_s
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self, client: Any = None) -> None:
        """Send the buffer; a chunk leaves it only once written, so nothing is sent twice."""
        client = client or self.client
        while self._pending:
            client.log_batch(self.run_id, metrics=self._pending[:_BATCH_LIMIT])
            del self._pending[:_BATCH_LIMIT]
        self._last_flush = time.monotonic()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.log_epoch(0 if step is None else step, metrics)
        self.flush()

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def _create_run(
    client: RetryingClient,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, Any],
    parent_run_id: str | None = None,
    start_ms: int | None = None,
) -> RunHandle:
    """A new RUNNING run with the tags `mlflow.start_run` would give it (source, user, parent)."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    user_tags = {**{k: str(v) for k, v in tags.items()}, MLFLOW_RUN_NAME: run_name, **_owner()}
    if parent_run_id is not None:
        user_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id, start_time=start_ms, tags=resolve_tags(user_tags),
                            run_name=run_name)  # fmt: skip
    return RunHandle(client, run.info.run_id, experiment_id=experiment_id)


def _end_failed(handle: RunHandle, status: str) -> None:
    """Keep what was logged and mark the run `status`, without hiding the error being raised.

    A short bound: if the store is what failed, the job should end soon with that error.
    """
    quick = handle.client.with_policy(RetryPolicy(max_wait_s=_CLEANUP_WAIT_S))
    try:
        handle.flush(quick)
    except Exception as exc:  # the original error matters more
        log.warning("could not send the last metrics of MLflow run %s: %s", handle.run_id, exc)
    try:
        quick.set_terminated(handle.run_id, status)
    except Exception as exc:
        log.warning("could not mark MLflow run %s %s: %s", handle.run_id, status, exc)


@contextmanager
def _opened(handle: RunHandle) -> Iterator[RunHandle]:
    """The active run while the body runs; then FINISHED, or FAILED/KILLED on an exception."""
    _active.append(handle)
    try:
        yield handle
        handle.flush()
    except Exception:
        _end_failed(handle, "FAILED")
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit
        _end_failed(handle, "KILLED")
        raise
    else:
        handle.client.set_terminated(handle.run_id, "FINISHED")
    finally:
        _active.remove(handle)


def _owner() -> dict[str, str]:
    """Which process holds a run open: how a later start tells a live run from a dead one."""
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}


def _alive(run: Any) -> bool:
    """Whether the process that opened `run` still runs (only knowable on its own host)."""
    tags = run.data.tags
    if tags.get(OWNER_HOST) != socket.gethostname() or not tags.get(OWNER_PID, "").isdigit():
        return False
    pid = int(tags[OWNER_PID])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def close_orphans(client: Any, experiment_id: str, tags: Mapping[str, str]) -> list[str]:
    """Mark FAILED the RUNNING runs of this model and stage whose process is gone.

    A SIGKILL (SLURM past its grace period, the OOM killer, a node failure) ends a process
    without any handler running, so its runs stay RUNNING forever. At the next start of the
    same model and stage into the same folder they are closed, with their nested fold runs,
    and tagged with why. A run whose process is alive on this host is left alone (with a
    warning: two trainings of one model into one folder would race).
    """
    keys = ("robustmer.model", "robustmer.stage", "robustmer.model_dir")
    if not all(k in tags and "'" not in tags[k] for k in keys):  # no quoting in the filter
        return []
    query = " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in keys)
    closed = []
    for run in client.search_runs([experiment_id], f"{query} and attributes.status = 'RUNNING'"):
        if _alive(run):
            owner = run.data.tags.get(OWNER_PID)
            log.warning("MLflow run %s of %s is still open by live process %s",
                        run.info.run_id, tags["robustmer.model"], owner)  # fmt: skip
            continue
        children = client.search_runs(
            [experiment_id],
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and attributes.status = 'RUNNING'",
        )
        for stale in [*children, run]:
            client.set_tag(stale.info.run_id, "robustmer.end", ORPHAN_NOTE)
            client.set_terminated(stale.info.run_id, "FAILED")
            closed.append(stale.info.run_id)
    if closed:
        log.warning("%s: marked %d MLflow run(s) left RUNNING by a killed process as FAILED",
                    tags["robustmer.model"], len(closed))  # fmt: skip
    return closed


@contextmanager
def model_run(
    params: Mapping[str, Any],
    run_name: str,
    tags: Mapping[str, str],
    run_params: Mapping[str, str],
) -> Iterator[RunHandle]:
    """The parent run of one model's training; ends FINISHED, or FAILED on an exception.

    Runs of the same model and stage that a killed process left RUNNING are closed first.
    Opened while another run is active (a search's trial), it is nested in that run.
    """
    client, experiment_id = _connect(params)
    close_orphans(client, experiment_id, tags)
    parent = _active[-1].run_id if _active else None
    with _opened(_create_run(client, experiment_id, run_name, tags, parent)) as run:
        run.log_params(run_params)
        yield run


@contextmanager
def fold_run(
    name: str, tags: Mapping[str, str], run_params: Mapping[str, str]
) -> Iterator[RunHandle]:
    """A run nested in the active parent run (one per fold)."""
    if not _active:
        raise RuntimeError("fold_run needs an active parent run (use it inside model_run)")
    parent = _active[-1]
    experiment_id = parent.experiment_id or parent.client.get_run(parent.run_id).info.experiment_id
    child = _create_run(parent.client, experiment_id, name, tags, parent_run_id=parent.run_id)
    with _opened(child) as run:
        run.log_params(run_params)
        yield run


class RecordedRun:
    """A fold's run handle in a worker process: keeps what would be logged, for the parent.

    Training units may run in worker processes (`train.workers`); an MLflow client (its database
    connections) must not cross a fork, so a worker records and the parent logs the fold run when
    the unit ends (`log_recorded_fold_run`), with the recorded steps and times.
    """

    run_id = ""

    def __init__(self) -> None:
        self.start_ms = int(time.time() * 1000)
        self.metrics: list[tuple[str, float, int, int]] = []
        self.tags: dict[str, str] = {}

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self.metrics += [(k, float(v), now, step) for k, v in metrics.items()]

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.log_epoch(0 if step is None else step, metrics)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def flush(self, client: Any = None) -> None:
        """Nothing to send: the parent logs the record."""

    def record(self) -> dict[str, Any]:
        end_ms = int(time.time() * 1000)
        return {"start_ms": self.start_ms, "end_ms": end_ms, "metrics": self.metrics,
                "tags": self.tags}  # fmt: skip


def log_recorded_fold_run(
    name: str, tags: Mapping[str, str], run_params: Mapping[str, str], record: Mapping[str, Any]
) -> str:
    """Log a worker's `RecordedRun` as a FINISHED run nested in the active parent; its id."""
    from mlflow.entities import Metric

    if not _active:
        raise RuntimeError("a fold run needs an active parent run (use it inside model_run)")
    parent = _active[-1]
    experiment_id = parent.experiment_id or parent.client.get_run(parent.run_id).info.experiment_id
    child = _create_run(parent.client, experiment_id, name, tags, parent.run_id, record["start_ms"])
    try:
        child.log_params(run_params)
        child._pending = [Metric(k, v, ts, step) for k, v, ts, step in record["metrics"]]
        child.flush()
        if record["tags"]:
            child.set_tags(record["tags"])
    except BaseException:
        _end_failed(child, "FAILED")
        raise
    child.client.set_terminated(child.run_id, "FINISHED", end_time=record["end_ms"])
    return child.run_id


@contextmanager
def resume_run(
    params: Mapping[str, Any], run_id: str | None, run_name: str, tags: Mapping[str, str]
) -> Iterator[RunHandle]:
    """Reopen a training run to add evaluation results.

    If the run is not in the configured store (another tracking URI, a deleted database), a new
    run named `<run_name>` is started instead with the same tags, so results are never lost.
    """
    from mlflow.exceptions import MlflowException

    client, experiment_id = _connect(params)
    run = None
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            run = None
            log.warning(
                "MLflow run from training not found at %s; logging evaluation to a new run",
                tracking_uri(params),
            )
    if run is not None:
        handle = RunHandle(client, run.info.run_id, experiment_id=run.info.experiment_id)
        client.update_run(handle.run_id, status="RUNNING")
        handle.set_tags(_owner())
    else:
        handle = _create_run(client, experiment_id, run_name, tags)
    with _opened(handle) as opened:
        if run is not None:
            opened.set_tags(tags)
        yield opened


def log_to_run(params: Mapping[str, Any], run_id: str, metrics: Mapping[str, float]) -> bool:
    """Add metrics to an existing (possibly finished) run; False if the run is not there."""
    from mlflow.exceptions import MlflowException

    client, _ = _connect(params)
    try:
        RunHandle(client, run_id).log_metrics(metrics)
    except MlflowException:
        return False
    return True
