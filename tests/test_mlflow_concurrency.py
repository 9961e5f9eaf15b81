"""Many jobs, one SQLite MLflow store: concurrent processes lose no run, metric or artifact.

Eight processes start logging at the same instant (each waits for a start file once ready), as
`snakemake --cores 8` train jobs would; no store exists beforehand, so they also race on
creating the database and the experiment. The retry wrapper itself is tested with fake
lock errors (shaped as MLflow raises them) and a patched sleep.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robustmer.errors import ConfigError
from robustmer.tracking import mlflow_run, retry

JOBS, FOLDS, EPOCHS, FLUSH_EVERY = 8, 2, 30, 5
METRICS = ("loss", "val_ua", "val_wa")
EXPERIMENT = "concurrency"
PARAMS = {"mlflow": {"experiment": EXPERIMENT}}
FAILURES = {"mlflow": {"experiment": "failures"}}

# One job, through the API the trainer uses (model_run / fold_run / log_epoch / log_artifact).
JOB = """
def job(i, root, folds, epochs, every, metrics, experiment):
    artifact = root / f"summary_{i}.json"
    artifact.write_text(json.dumps({"job": i}))
    (root / f"ready_{i}").touch()
    deadline = time.monotonic() + 60  # never outlive a test that gave up
    while not (root / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no start signal")
        time.sleep(0.002)
    started = time.perf_counter()
    params = {"mlflow": {"experiment": experiment}}
    run_params = {f"p{k}": str(i * 100 + k) for k in range(12)}
    with mlflow_run.model_run(params, f"job_{i}", {"job": str(i)}, run_params) as parent:
        for fold in range(folds):
            name = f"job_{i}_fold_{fold}"
            with mlflow_run.fold_run(name, {"fold": str(fold)}, {"fold": str(fold)}) as run:
                for step in range(epochs):
                    run.log_epoch(step, {m: i + fold + step / epochs for m in metrics})
                    if (step + 1) % every == 0:
                        run.flush()  # a burst of log_batch calls, as a long run's live curves
                run.log_metrics({"best_epoch": epochs - 1})
                run.log_artifact(artifact, "fold")
        parent.log_metrics({"cv_val_ua": i / 10})
        parent.log_artifact(artifact)
    out = {"run_id": parent.run_id, "seconds": time.perf_counter() - started,
           "retries": retry.retried_calls}
    (root / f"done_{i}.json").write_text(json.dumps(out))
"""

# Imports once, then forks the jobs: separate processes with their own SQLite connections (as
# Snakemake's jobs), without paying MLflow's import eight times on a 2-core CI machine. Nothing
# of MLflow's is opened before the fork, so the jobs share no connection.
DRIVER = (
    """
import json, os, sys, time, traceback
from pathlib import Path

import mlflow.entities
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 (the store's import, paid once)

from robustmer.tracking import mlflow_run, retry
"""
    + JOB
    + """
root, n, folds, epochs, every = Path(sys.argv[1]), *map(int, sys.argv[2:6])
children = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            job(i, root, folds, epochs, every, sys.argv[6].split(","), sys.argv[7])
        except BaseException:
            (root / f"error_{i}.txt").write_text(traceback.format_exc())
            code = 1
        os._exit(code)
    children.append(pid)
sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in children))
"""
)


def _env(uri: str) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        retry.MAX_WAIT_ENV: "120",
    }


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


@pytest.fixture(scope="module")
def fan_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """JOBS processes log to one fresh SQLite store, all released by one start file."""
    if not hasattr(os, "fork"):
        pytest.skip("the jobs are forked (POSIX only)")
    root = tmp_path_factory.mktemp("fan_out")
    uri = f"sqlite:///{root}/mlflow.db"
    args = [str(JOBS), str(FOLDS), str(EPOCHS), str(FLUSH_EVERY), ",".join(METRICS)]
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(root), *args, EXPERIMENT],
        env=_env(uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(
            lambda: len(list(root.glob("ready_*"))) == JOBS or driver.poll() is not None,
            timeout=45,
            what="the jobs did not start",
        )
        started = time.perf_counter()
        (root / "go").touch()  # the barrier: every job starts writing now
        output, _ = driver.communicate(timeout=120)
        seconds = time.perf_counter() - started
    finally:
        if driver.poll() is None:
            driver.kill()
    errors = {p.name: p.read_text() for p in sorted(root.glob("error_*.txt"))}
    assert driver.returncode == 0 and not errors, f"{output[-3000:]}\n{errors}"
    done = [json.loads((root / f"done_{job}.json").read_text()) for job in range(JOBS)]
    slowest = max(d["seconds"] for d in done)
    retries = sum(d["retries"] for d in done)
    print(f"\n{JOBS} jobs logged in {seconds:.1f} s (slowest {slowest:.1f} s), {retries} retries")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield {"root": root, "uri": uri, "done": done}


def test_every_job_logged_everything(fan_out: dict[str, Any]) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=fan_out["uri"])
    experiments = client.search_experiments()
    assert [e.name for e in experiments].count(EXPERIMENT) == 1  # created once, by one job
    (experiment,) = [e for e in experiments if e.name == EXPERIMENT]
    everywhere = client.search_runs([e.experiment_id for e in experiments], max_results=1000)
    runs = [r for r in everywhere if r.info.run_name.startswith("job_")]
    assert len(runs) == JOBS * (1 + FOLDS)
    assert {r.info.experiment_id for r in runs} == {experiment.experiment_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents) == sorted(f"job_{j}" for j in range(JOBS))
    assert {d["run_id"] for d in fan_out["done"]} == {r.info.run_id for r in parents.values()}
    for job in range(JOBS):
        parent = parents[f"job_{job}"]
        assert parent.data.params == {f"p{k}": str(job * 100 + k) for k in range(12)}
        assert parent.data.tags["job"] == str(job)
        assert parent.data.metrics == {"cv_val_ua": pytest.approx(job / 10)}
        logged = [a.path for a in client.list_artifacts(parent.info.run_id)]
        assert logged == [f"summary_{job}.json"]
        assert parent.info.artifact_uri.startswith((fan_out["root"] / "mlruns").as_uri())
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.info.run_name for r in children) == [
            f"job_{job}_fold_{f}" for f in range(FOLDS)
        ]
        for child in children:
            fold = int(child.data.params["fold"])
            assert child.data.tags["fold"] == str(fold)
            assert child.data.metrics["best_epoch"] == EPOCHS - 1
            for key in METRICS:
                history = client.get_metric_history(child.info.run_id, key)
                assert sorted(m.step for m in history) == list(range(EPOCHS)), key
                last = max(history, key=lambda m: m.step)
                assert last.value == pytest.approx(job + fold + (EPOCHS - 1) / EPOCHS)
            logged = [a.path for a in client.list_artifacts(child.info.run_id, "fold")]
            assert logged == [f"fold/summary_{job}.json"]


def test_init_tracking_is_idempotent(fan_out: dict[str, Any]) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=fan_out["uri"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert mlflow_run.init_tracking(PARAMS) == experiment.experiment_id
    assert mlflow_run.init_tracking(PARAMS) == experiment.experiment_id
    assert [e.name for e in client.search_experiments()].count(EXPERIMENT) == 1


def test_failing_job_keeps_its_metrics_and_ends_failed(fan_out: dict[str, Any]) -> None:
    import mlflow

    with (
        pytest.raises(ValueError, match="diverged"),
        mlflow_run.model_run(FAILURES, "broken", {}, {"a": "1"}) as parent,
        mlflow_run.fold_run("broken_fold", {}, {}) as fold,
    ):
        fold.flush_every_s = 3600  # still buffered when the error comes
        fold.log_epoch(1, {"loss": 0.5})
        raise ValueError("loss diverged")
    client = mlflow.MlflowClient(tracking_uri=fan_out["uri"])
    child = client.get_run(fold.run_id)
    assert child.info.status == "FAILED" and child.data.metrics == {"loss": 0.5}
    assert child.data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(parent.run_id).info.status == "FAILED"
    assert mlflow_run._active == []


def test_lock_held_past_the_busy_timeout_is_waited_out(
    fan_out: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real lock and MLflow's real error: another writer holds the database too long.

    MLflow makes SQLite wait up to 20 s (`PRAGMA busy_timeout` per session); that pragma is cut
    to 50 ms here so the test need not wait 20 s for MLflow to give up and the retries to start.
    """
    import re
    import threading

    import mlflow
    import sqlalchemy
    from sqlalchemy.engine import Engine

    rewritten: list[str] = []

    def short_busy_timeout(*args: Any) -> tuple[str, Any]:
        statement, parameters = args[2], args[3]  # (conn, cursor, statement, parameters, ...)
        new = re.sub(r"PRAGMA busy_timeout\s*=\s*\d+", "PRAGMA busy_timeout = 50", statement)
        if new != statement:
            rewritten.append(statement)
        return new, parameters

    monkeypatch.setenv(retry.MAX_WAIT_ENV, "30")
    before = retry.retried_calls
    # Another writer takes the lock; it lets go after 1 s, from its own thread.
    hog = sqlite3.connect(
        fan_out["root"] / "mlflow.db", isolation_level=None, check_same_thread=False
    )
    hog.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, hog.execute, ["COMMIT"])
    sqlalchemy.event.listen(Engine, "before_cursor_execute", short_busy_timeout, retval=True)
    try:
        release.start()
        with mlflow_run.model_run(PARAMS, "patient", {}, {"a": "1"}) as run:
            run.log_metrics({"m": 1.0})
    finally:
        release.join()
        sqlalchemy.event.remove(Engine, "before_cursor_execute", short_busy_timeout)
        hog.close()
    assert rewritten, "MLflow no longer sets busy_timeout per session: revisit retry.py"
    assert retry.retried_calls > before
    finished = mlflow.MlflowClient(tracking_uri=fan_out["uri"]).get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics == {"m": 1.0}


def test_track_init_command(fan_out: dict[str, Any]) -> None:
    """`robustmer track-init` (Snakemake's onstart) creates params.yaml's experiment."""
    import mlflow
    from typer.testing import CliRunner

    from robustmer.cli import app
    from robustmer.config import load_params

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    result = CliRunner().invoke(app, ["track-init", "--params", str(params)])
    assert result.exit_code == 0, result.output
    name = mlflow_run.experiment_name(load_params(params))
    client = mlflow.MlflowClient(tracking_uri=fan_out["uri"])
    experiment = client.get_experiment_by_name(name)
    assert f"(id {experiment.experiment_id}) ready at {fan_out['uri']}" in result.output


# --- the retry wrapper, with fake lock errors and no real sleeping -------------------------


def mlflow_locked_error() -> Exception:
    """A lock error shaped as MLflow's session raises it: MlflowException <- SQLAlchemy."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    cause = sqlite3.OperationalError("database is locked")
    try:
        try:
            raise sqlalchemy.exc.OperationalError("INSERT INTO metrics", {}, cause) from cause
        except sqlalchemy.exc.OperationalError as exc:
            raise MlflowException(message=exc, error_code="TEMPORARILY_UNAVAILABLE") from exc
    except MlflowException as exc:
        return exc


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(retry, "_sleep", slept.append)
    return slept


def test_retry_recovers_from_a_locked_store(sleeps: list[float]) -> None:
    failures = [mlflow_locked_error(), sqlite3.OperationalError("database is locked")]

    def log_batch(run_id: str) -> str:
        if failures:
            raise failures.pop(0)
        return f"logged {run_id}"

    policy = retry.RetryPolicy(max_wait_s=60, first_delay_s=0.1)
    assert retry.with_retry(log_batch, "sqlite:///m.db", policy=policy)("r1") == "logged r1"
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2  # doubling, jittered


def test_retry_gives_up_after_the_bound_with_advice(sleeps: list[float]) -> None:
    calls = 0

    def create_run() -> None:
        nonlocal calls
        calls += 1
        raise mlflow_locked_error()

    policy = retry.RetryPolicy(max_wait_s=20, first_delay_s=0.1, max_delay_s=4)
    with pytest.raises(retry.TrackingStoreBusy) as info:
        retry.with_retry(create_run, "sqlite:///runs/mlflow.db", policy=policy)()
    message = str(info.value)
    assert "MLflow store sqlite:///runs/mlflow.db stayed locked" in message
    assert "create_run" in message and "database is locked" in message
    assert "mlflow server" in message and "MLFLOW_TRACKING_URI=http://" in message
    assert retry.MAX_WAIT_ENV in message
    assert sum(sleeps) <= 20 and calls == len(sleeps) + 1 > 5
    assert max(sleeps) <= 4
    assert retry.is_locked(info.value.__cause__)


def test_other_errors_are_not_retried(sleeps: list[float]) -> None:
    from mlflow.exceptions import MlflowException

    for error in (
        MlflowException("Run 'abc' not found", error_code="RESOURCE_DOES_NOT_EXIST"),
        sqlite3.OperationalError("no such table: runs"),
        RuntimeError("database is locked"),  # right words, but not from a database layer
    ):

        def call(error: Exception = error) -> None:
            raise error

        with pytest.raises(type(error)):
            retry.with_retry(call, "sqlite:///m.db")()
    assert sleeps == []


def test_retrying_client_wraps_every_method(sleeps: list[float]) -> None:
    class FakeClient:
        tracking_uri = "sqlite:///m.db"

        def __init__(self) -> None:
            self.calls = 0

        def set_terminated(self, run_id: str, status: str) -> str:
            self.calls += 1
            if self.calls == 1:
                raise mlflow_locked_error()
            return status

    fake = FakeClient()
    client = retry.RetryingClient(fake, "sqlite:///m.db", retry.RetryPolicy(max_wait_s=5))
    assert client.set_terminated("r", "FINISHED") == "FINISHED" and fake.calls == 2
    assert client.tracking_uri == "sqlite:///m.db" and len(sleeps) == 1
    assert client.with_policy(retry.RetryPolicy(max_wait_s=1)).policy.max_wait_s == 1


def test_max_wait_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(retry.MAX_WAIT_ENV, "42")
    assert retry.RetryPolicy.from_env().max_wait_s == 42
    monkeypatch.setenv(retry.MAX_WAIT_ENV, "soon")
    with pytest.raises(ConfigError, match=retry.MAX_WAIT_ENV):
        retry.RetryPolicy.from_env()
    monkeypatch.delenv(retry.MAX_WAIT_ENV)
    assert retry.RetryPolicy.from_env().max_wait_s == retry.DEFAULT_MAX_WAIT_S
