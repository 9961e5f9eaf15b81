"""The warm stage server (robustmer/launcher.py, robustmer/stage_server.py): a command run in a
forked child of the server is the same command as in a process of its own: same checkpoints and
summaries, same exit statuses and messages, the same clean stop on a forwarded signal, and it
dies with a killed client. The server's key follows the sources and the import environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_resume import checkpoints, rows
from test_signals import first_epoch_saved, gone, project, statuses, train, wait_for

from robustmer import launcher
from robustmer.tracking.mlflow_run import OWNER_PID

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets and /proc: Linux")


@pytest.fixture
def warm_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a project whose commands go through a stage server of their own."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/p/mlflow.db",  # the project is tmp_path/p
        "ROBUSTMER_NO_PROGRESS": "1",
        launcher.DIR_ENV: str(tmp_path / "run"),
        launcher.IDLE_ENV: "120",
    }
    env.pop(launcher.WARM_ENV, None)
    env.pop("SLURM_JOB_ID", None)
    (tmp_path / "run").mkdir()
    yield env
    for lock in (tmp_path / "run").glob("robustmer-*/*.lock"):
        pid = int(lock.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda pid=pid: gone(pid), "the server to end", 30)
    assert not list((tmp_path / "run").glob("robustmer-*/*.sock"))  # removed on the way out


def launch(root: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The command as the `robustmer` console script runs it."""
    return subprocess.Popen([sys.executable, "-m", "robustmer.launcher", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = launch(root, env, *args)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def server_ready(env: dict[str, str]) -> bool:
    return bool(list(Path(env[launcher.DIR_ENV]).glob("robustmer-*/*.sock")))


def owners(root: Path) -> set[str]:
    """The processes that opened the project's MLflow runs."""
    return {tags[OWNER_PID] for _, _, tags in statuses(root).values()}


def running_owners(root: Path) -> set[str]:
    """The processes holding the project's RUNNING MLflow runs open."""
    return {tags[OWNER_PID] for _, status, tags in statuses(root).values() if status == "RUNNING"}


def test_a_warm_command_is_the_same_command(warm_env: dict[str, str], tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    target = root / "models" / "builtin" / "fusion_mlp"
    first = launch(root, warm_env, "train", "fusion_mlp")  # no server yet: runs here, starts one
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    cold = (checkpoints(target), rows(target))
    assert owners(root) == {str(first.pid)}
    wait_for(lambda: server_ready(warm_env), "the stage server")

    proc = launch(root, warm_env, "train", "fusion_mlp")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "trained fusion_mlp into models/builtin/fusion_mlp" in out
    assert "[robustmer] train finished in" in err
    assert (checkpoints(target), rows(target)) == cold
    child = owners(root) - {str(first.pid)}  # its runs were opened by the server's child
    assert len(child) == 1 and str(proc.pid) not in child

    bad = run(root, warm_env, "train", "nope")
    assert bad.returncode == 2
    assert "error: model 'nope' is not in params.yaml" in bad.stderr


def test_a_forwarded_signal_stops_the_warm_command_cleanly(
    warm_env: dict[str, str], tmp_path: Path
) -> None:
    root = project(tmp_path / "p")
    assert run(root, warm_env, "train", "nope").returncode == 2  # runs here, starts the server
    wait_for(lambda: server_ready(warm_env), "the stage server")
    proc = launch(root, warm_env, "train", "fusion_mlp")
    wait_for(first_epoch_saved(root), "the first epoch checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted by SIGTERM: train stopped cleanly" in err.strip().splitlines()[-1]
    assert sorted(s for _, s, _ in statuses(root).values()) == ["KILLED", "KILLED"]

    proc = launch(root, warm_env, "train", "fusion_mlp")  # resumes the interrupted build
    wait_for(lambda: bool(running_owners(root)), "the resumed run")
    (child,) = running_owners(root)
    assert int(child) != proc.pid
    proc.kill()
    proc.communicate(timeout=60)
    wait_for(lambda: gone(int(child)), "the killed client's command to end", 30)
    train(root)  # the next start fails its runs, as after any SIGKILL
    assert "RUNNING" not in {s for _, s, _ in statuses(root).values()}


def test_the_server_key_follows_sources_and_import_environment(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n")
    base = {"PATH": "/bin"}
    key = launcher.server_key(base, package)
    assert launcher.server_key({**base, "MLFLOW_TRACKING_URI": "sqlite:///x.db"}, package) == key
    assert launcher.server_key({**base, "PYTHONHASHSEED": "1"}, package) != key
    (package / "mod.py").write_text("x = 22\n")
    assert launcher.server_key(base, package) != key


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["robustmer", "evaluate", "m", "clean"], {}, True),
        (["robustmer", "evaluate", "m", "clean"], {"ROBUSTMER_WARM": "0"}, False),
        (["robustmer", "train", "m"], {"SLURM_JOB_ID": "12"}, False),
        (["robustmer", "train", "--help"], {}, False),
        (["robustmer", "lineage"], {}, False),
        (["robustmer"], {}, False),
    ],
)
def test_which_commands_go_warm(argv: list[str], env: dict[str, str], expected: bool) -> None:
    assert launcher.enabled(argv, env) is expected


def test_no_server_means_the_command_runs_here(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    stale.touch()  # what a killed server leaves
    assert launcher.connect(stale) is None
    assert launcher.connect(tmp_path / "none.sock") is None
