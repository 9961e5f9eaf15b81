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
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robustmer.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_BATCH_LIMIT = 1000  # MLflow's maximum number of metrics in one log_batch call


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


def _connect(params: Mapping[str, Any]) -> tuple[Any, str]:
    """Point MLflow at the configured store; return the client and the experiment id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    name = experiment_name(params)
    with _sqlite_init_lock(uri):
        client = mlflow.MlflowClient(tracking_uri=uri)  # creates/migrates the tables
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


class RunHandle:
    """An open MLflow run: immediate metrics/artifacts plus buffered per-epoch metrics."""

    def __init__(self, client: Any, run_id: str, flush_every_s: float = 10.0):
        self.client = client
        self.run_id = run_id
        self.flush_every_s = flush_every_s
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self._pending), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=self._pending[start : start + _BATCH_LIMIT])
        self._pending = []
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


@contextmanager
def model_run(
    params: Mapping[str, Any],
    run_name: str,
    tags: Mapping[str, str],
    run_params: Mapping[str, str],
) -> Iterator[RunHandle]:
    """The parent run of one model's training; ends FINISHED, or FAILED on an exception."""
    import mlflow

    client, experiment_id = _connect(params)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as run:
        handle = RunHandle(client, run.info.run_id)
        handle.log_params(run_params)
        try:
            yield handle
        finally:
            handle.flush()


@contextmanager
def fold_run(
    name: str, tags: Mapping[str, str], run_params: Mapping[str, str]
) -> Iterator[RunHandle]:
    """A run nested in the active parent run (one per fold)."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        raise RuntimeError("fold_run needs an active parent run (use it inside model_run)")
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id, run_name=name, nested=True, tags=dict(tags)
    ) as run:
        handle = RunHandle(mlflow.MlflowClient(), run.info.run_id)
        handle.log_params(run_params)
        try:
            yield handle
        finally:
            handle.flush()


@contextmanager
def resume_run(
    params: Mapping[str, Any], run_id: str | None, run_name: str, tags: Mapping[str, str]
) -> Iterator[RunHandle]:
    """Reopen a training run to add evaluation results.

    If the run is not in the configured store (another tracking URI, a deleted database), a new
    run named `<run_name>` is started instead with the same tags, so results are never lost.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client, experiment_id = _connect(params)
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage != "active":
                run_id = None
        except MlflowException:
            run_id = None
        if run_id is None:
            log.warning(
                "MLflow run from training not found at %s; logging evaluation to a new run",
                tracking_uri(params),
            )
    if run_id:
        ctx = mlflow.start_run(run_id=run_id)
    else:
        ctx = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags))
    with ctx as run:
        handle = RunHandle(client, run.info.run_id)
        if run_id:
            handle.set_tags(tags)
        try:
            yield handle
        finally:
            handle.flush()


def log_to_run(params: Mapping[str, Any], run_id: str, metrics: Mapping[str, float]) -> bool:
    """Add metrics to an existing (possibly finished) run; False if the run is not there."""
    from mlflow.exceptions import MlflowException

    client, _ = _connect(params)
    try:
        RunHandle(client, run_id).log_metrics(metrics)
    except MlflowException:
        return False
    return True
