"""dvc.yaml and the Snakefile define the same stages, commands and outputs; lint stays clean."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from robustmer import paths
from robustmer.config import load_params

ROOT = Path(__file__).resolve().parents[1]
REDIRECT = re.compile(r"\s*>\s*\S+\s+2>&1\s*$")


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def dvc_stages() -> dict[str, tuple[str, set[str]]]:
    """cmd -> (stage name, outputs) from dvc.yaml, with foreach expanded by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {
            s.cmd: (s.addressing, {str(o.def_path) for o in s.outs}) for s in repo.index.stages
        }


def snakemake_jobs(tmp_path: Path) -> dict[str, tuple[str, set[str]]]:
    """cmd -> (rule, outputs) from `snakemake --detailed-summary` (every job of the DAG)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--detailed-summary", "--quiet", "all",
         "--directory", str(ROOT)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if "\t" in ln]
    jobs: dict[str, tuple[str, set[str]]] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines)), delimiter="\t"):
        cmd = REDIRECT.sub("", row["shellcmd"]).strip()
        rule, outs = jobs.get(cmd, (row["rule"], set()))
        outs.add(row["output_file"].rstrip("/"))
        jobs[cmd] = (rule, outs)
    return jobs


def test_same_commands_and_outputs(tmp_path: Path) -> None:
    dvc = dvc_stages()
    snake = snakemake_jobs(tmp_path)
    assert set(dvc) == set(snake), (sorted(dvc), sorted(snake))
    for cmd, (stage, outs) in dvc.items():
        rule, snake_outs = snake[cmd]
        assert stage.split("@")[0] == rule, cmd
        assert outs == snake_outs, (cmd, outs, snake_outs)


def test_outputs_follow_the_paths_module() -> None:
    params = load_params(ROOT / "params.yaml")
    outs = {o for _, stage_outs in dvc_stages().values() for o in stage_outs}
    ds = params["dataset"]
    expected = {
        paths.raw_dir(ds), paths.feature_dir(ds), paths.validation_summary(ds),
        paths.data_docs_dir(ds), paths.report_dir(),
    }
    for model in params["models"]:
        expected |= {
            paths.model_dir(model), paths.metrics_file(model), paths.predictions_file(model),
            paths.confusion_png(model),
        }
    assert outs == {p.as_posix() for p in expected}


@pytest.mark.parametrize("cmd", [["snakemake", "--lint"], ["snakefmt", "--check", "Snakefile",
                                                            "workflow/rules"]])
def test_workflow_lints_clean(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
