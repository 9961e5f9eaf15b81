"""dvc.yaml and the Snakefile define the same stages, commands and outputs; lint stays clean."""

from __future__ import annotations

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
        return {s.cmd: (s.addressing, {str(o.def_path) for o in s.outs}) for s in repo.index.stages}


def snakemake_jobs() -> dict[str, tuple[str, set[str]]]:
    """cmd -> (rule, outputs) for every job of a forced dry run (`snakemake -n -p --forceall`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs: dict[str, tuple[str, set[str]]] = {}
    rule, outs = "", set()
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            rule, outs = m.group(1), set()
        elif line.startswith("output: "):
            outs = {o.strip() for o in line[len("output: ") :].split(",")}
        elif line.startswith("Shell command: ") and line != "Shell command: None":
            jobs[REDIRECT.sub("", line[len("Shell command: ") :]).strip()] = (rule, outs)
    return jobs


def test_same_commands_and_outputs() -> None:
    dvc = dvc_stages()
    snake = snakemake_jobs()
    assert len(snake) >= 7
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
        paths.raw_dir(ds),
        paths.feature_dir(ds),
        paths.validation_summary(ds),
        paths.data_docs_dir(ds),
        paths.report_dir(ds),
    }
    conditions = params["corrupt"]["conditions"]
    expected |= {paths.corrupted_dir(ds, c) for c in conditions}
    for model in params["models"]:
        expected |= {paths.model_dir(model), paths.pretrain_dir(model)}
        for c in conditions:
            expected |= {
                paths.metrics_file(model, c),
                paths.scores_file(model, c),
                paths.predictions_file(model, c),
                paths.confusion_png(model, c),
                paths.confusion_csv(model, c),
            }
    assert outs == {p.as_posix() for p in expected}


@pytest.mark.parametrize(
    "cmd", [["snakemake", "--lint"], ["snakefmt", "--check", "Snakefile", "workflow/rules"]]
)
def test_workflow_lints_clean(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
