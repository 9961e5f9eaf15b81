"""Real signals to real processes: SIGINT / SIGTERM end a stage cleanly, SIGKILL leaves no orphan.

`robustmer train` is started as SLURM or Snakemake would start it and signalled once its first
epoch checkpoint is on disk: it must exit with 128 + the signal number and one line saying so,
leave the previous model folder byte-identical, end its MLflow runs KILLED, and the rerun must
resume and end byte-identical to an uninterrupted run. A SIGKILLed train leaves RUNNING runs
that the next start marks FAILED. Worker pools (extract, corrupt, the built-in corpus) must not
outlive their parent, whether it is stopped by SIGTERM or killed by SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import build_synthetic_store, tiny_params_dict
from test_resume import checkpoints, folder_digest, rows

from robustmer.tracking.mlflow_run import ORPHAN_NOTE
from robustmer.training.resume import building_dir

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc: Linux only")

DEADLINE_S = 120.0


def wait_for(check: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def project(root: Path, seed: int = 7) -> Path:
    """A project folder the CLI can run in: the tiny store and a params.yaml."""
    if not (root / "data" / "features" / "builtin").exists():
        build_synthetic_store(root / "data" / "features" / "builtin")
    params = tiny_params_dict(epochs=60, patience=0, checkpoint_every_s=0)
    params["seed"] = seed
    params["models"] = {"fusion_mlp": params["models"]["fusion_mlp"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def start_train(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "ROBUSTMER_NO_PROGRESS": "1"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "robustmer.cli", "train", "fusion_mlp"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def train(root: Path) -> None:
    proc = start_train(root)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def statuses(root: Path) -> dict[str, str]:
    """run id -> status, and run id -> run name, of every run in the project's store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {r.info.run_id: (r.info.run_name, r.info.status, r.data.tags) for r in runs}


def first_epoch_saved(root: Path) -> Callable[[], bool]:
    resume = building_dir(root / "models" / "builtin" / "fusion_mlp") / "resume"
    return lambda: any(resume.glob("seed_*/fold_*/fit_0.epoch.pt"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same training, never interrupted."""
    root = project(tmp_path_factory.mktemp("straight"))
    train(root)
    return root / "models" / "builtin" / "fusion_mlp"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_train_cleanly_and_the_rerun_resumes(
    sig: signal.Signals, straight: Path, tmp_path: Path
) -> None:
    root = project(tmp_path)
    target = root / "models" / "builtin" / "fusion_mlp"
    shutil.copytree(straight, target)  # the previous model, marked as such
    (target / "previous.txt").write_text("the model before this run")
    previous = folder_digest(target)

    proc = start_train(root)
    wait_for(first_epoch_saved(root), "the first epoch checkpoint")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"interrupted by {sig.name}: train stopped cleanly" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert folder_digest(target) == previous
    runs = statuses(root)
    assert sorted(s for _, s, _ in runs.values() if s != "FINISHED") in (
        ["KILLED", "KILLED"],  # the model's run and the fold run in progress
    ), runs

    train(root)
    assert not (target / "previous.txt").exists()  # replaced by the resumed run's folder
    assert checkpoints(target) == checkpoints(straight)
    assert rows(target) == rows(straight)
    assert not building_dir(target).exists()


def test_runs_left_running_by_a_sigkill_are_failed_at_the_next_start(tmp_path: Path) -> None:
    root = project(tmp_path)
    proc = start_train(root)
    wait_for(first_epoch_saved(root), "the first epoch checkpoint")
    proc.kill()
    proc.communicate(timeout=60)
    orphans = [i for i, (_, s, _) in statuses(root).items() if s == "RUNNING"]
    assert len(orphans) == 2  # nothing could end them

    train(root)
    runs = statuses(root)
    for run_id in orphans:
        _, status, tags = runs[run_id]
        assert status == "FAILED"
        assert tags["robustmer.end"] == ORPHAN_NOTE
    assert not [i for i, (_, s, _) in runs.items() if s == "RUNNING"]


WORKER_SCRIPT = """
import os, sys, time
from pathlib import Path
from robustmer import signals
from robustmer.features.base import parallel_map

def slow(x):
    Path(sys.argv[1], str(os.getpid())).touch()
    time.sleep(60)
    return x

if __name__ == "__main__":
    signals.stop_on_signals()
    try:
        parallel_map(slow, list(range(8)), 2, "test", chunksize=1)
    except KeyboardInterrupt:
        sys.exit(signals.exit_code(signals.received()))
"""


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for a reaper (it runs no code)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_worker_processes_end_with_their_parent(sig: signal.Signals, tmp_path: Path) -> None:
    """The pool `extract` and `corrupt` use (features/base.py: parallel_map)."""
    script = tmp_path / "pool.py"
    script.write_text(WORKER_SCRIPT)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "ROBUSTMER_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(pids)], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: len(list(pids.iterdir())) == 2, "two busy workers")
    workers = [int(p.name) for p in pids.iterdir()]
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    assert proc.returncode == (128 + sig if sig != signal.SIGKILL else -sig)
    wait_for(lambda: all(gone(pid) for pid in workers), "the workers to end", timeout=10)
