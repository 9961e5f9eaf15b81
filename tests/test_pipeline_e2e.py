"""End to end: the whole pipeline through `dvc repro` and through `snakemake` on a tiny corpus.

Both run in temporary copies of the project with the same tiny params file; they must finish,
agree exactly on every metric, and the fusion baseline must beat chance by a wide margin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ("audio_mlp", "fusion_mlp", "mer2024_attention")
pytestmark = pytest.mark.e2e


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["acquire"]["builtin"].update(n_speakers=6, utterances_per_speaker=16, n_folds=3)
    params["train"].update(epochs=25, patience=8)
    params["models"] = {name: params["models"][name] for name in TINY_MODELS}
    return params


def project_copy(dest: Path) -> Path:
    """Copy what git would ship (tracked and untracked-but-not-ignored files) and commit it."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    run(["git", "init", "-q"], dest)
    run([*git, "add", "-A"], dest)
    run([*git, "commit", "-qm", "tiny copy"], dest)
    return dest


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("MLFLOW_TRACKING_URI", None)  # each copy logs to its own sqlite:///mlflow.db
    e.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        GX_ANALYTICS_ENABLED="false",
        ROBUSTMER_NO_PROGRESS="1",
    )
    return e


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode:
        logs = (
            "".join(
                f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "logs").rglob("*.log"))
            )
            if (cwd / "logs").is_dir()
            else ""
        )
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}{logs}")
    return out


def metrics(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "results/metrics").glob("*.json")}


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(tmp_path_factory.mktemp("dvc"))
    run(["dvc", "repro"], root)
    return root


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(tmp_path_factory.mktemp("snakemake"))
    run(["snakemake", "--cores", "2"], root)
    return root


def test_dvc_repro_runs_everything(dvc_run: Path) -> None:
    got = metrics(dvc_run)
    assert sorted(got) == sorted(TINY_MODELS)
    summary = json.loads((dvc_run / "results/validation/builtin.json").read_text())
    assert summary["success"] is True
    assert (dvc_run / "results/report/summary.md").is_file()
    assert (dvc_run / "results/plots/fusion_mlp_confusion.png").stat().st_size > 1000
    assert (dvc_run / "dvc.lock").is_file()
    # Four classes: chance is 0.25; the fusion baseline must be far above it.
    assert got["fusion_mlp"]["ua"] > 0.6, got["fusion_mlp"]
    assert got["mer2024_attention"]["ua"] > 0.5, got["mer2024_attention"]


def test_dvc_rerun_is_a_no_op(dvc_run: Path) -> None:
    status = run(["dvc", "status"], dvc_run)
    assert "up to date" in status, status
    out = run(["dvc", "repro"], dvc_run)
    assert "Running stage" not in out, out


def test_mlflow_run_per_model_with_lineage_tags(dvc_run: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{dvc_run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("robustmer")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == sorted(TINY_MODELS)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=dvc_run, capture_output=True, text=True
    ).stdout.strip()
    for parent in parents:
        tags = parent.data.tags
        assert tags["mlflow.source.git.commit"] == commit
        assert tags["robustmer.git_dirty"] in ("true", "false")
        assert len(tags["robustmer.features_hash"]) == 64
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 3  # one nested run per fold


def test_snakemake_matches_dvc(dvc_run: Path, snakemake_run: Path) -> None:
    assert metrics(snakemake_run) == metrics(dvc_run)
    for rel in ("results/validation/builtin.json", "results/predictions/fusion_mlp.csv"):
        assert (snakemake_run / rel).read_text() == (dvc_run / rel).read_text(), rel
    dry = run(["snakemake", "-n"], snakemake_run)
    assert "Nothing to be done" in dry, dry


def test_dvc_experiment_tags_its_mlflow_runs(dvc_run: Path, snakemake_run: Path) -> None:
    """Last on purpose: the experiment rewrites the DVC copy's outputs."""
    import mlflow

    run(["dvc", "exp", "run", "-S", "train.lr=0.002", "-n", "lr-test"], dvc_run)
    assert "lr-test" in run(["dvc", "exp", "list"], dvc_run)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{dvc_run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("robustmer")
    tagged = client.search_runs(
        [exp.experiment_id], filter_string="tags.`robustmer.dvc_exp_name` = 'lr-test'"
    )
    parents = [r for r in tagged if "mlflow.parentRunId" not in r.data.tags]
    assert {r.info.run_name for r in parents} == set(TINY_MODELS)
    assert {r.data.params["train.lr"] for r in parents} == {"0.002"}
