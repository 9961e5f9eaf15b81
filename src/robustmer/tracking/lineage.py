"""Lineage facts attached to every tracked run: code version, data version, DVC experiment.

With these tags an MLflow run can be traced back to the exact commit (and whether the tree had
uncommitted edits), the exact features (content hash of the manifest and feature arrays, and the
store folder they were read from) and the DVC experiment that produced it. `robustmer lineage`
(tracking/audit.py) follows these tags and checks the hashes against the files on disk.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustmer import __version__
from robustmer.data.store import FeatureStore
from robustmer.gate_status import gate_tags
from robustmer.io import sha256_file

UNKNOWN = "unknown"
PIPELINE_WRITES = {"dvc.lock", "mlflow.db"}
PIPELINE_WRITE_DIRS = ("data/", "models/", "results/", "logs/", "mlruns/", ".snakemake/")
DVC_ENV_TAGS = {
    "DVC_EXP_NAME": "robustmer.dvc_exp_name",
    "DVC_EXP_BASELINE_REV": "robustmer.dvc_exp_baseline_rev",
}


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def changed_inputs(porcelain: str) -> list[str]:
    """Paths in `git status --porcelain` output that can change a result.

    What the pipeline itself writes (dvc.lock, its outputs, the MLflow store, the .gitignore
    entries DVC adds) does not count: otherwise every run after the first stage of a clean
    checkout would be tagged dirty.
    """
    changed = []
    for line in porcelain.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if path in PIPELINE_WRITES or path.startswith(PIPELINE_WRITE_DIRS):
            continue
        if path.endswith(".gitignore"):
            continue
        changed.append(path)
    return changed


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """Commit of HEAD and whether code or params differ from it ("unknown" outside git)."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    status = _git("status", "--porcelain", cwd=cwd) if commit else None
    tags = {
        "robustmer.git_commit": commit or UNKNOWN,
        "robustmer.git_dirty": UNKNOWN
        if status is None
        else str(bool(changed_inputs(status))).lower(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def head_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the repository at `cwd`; None outside git."""
    return _git("rev-parse", "HEAD", cwd=cwd)


def commit_known(commit: str, cwd: Path | None = None) -> bool | None:
    """Whether the repository at `cwd` holds `commit`; None when `cwd` is not in a repository."""
    if head_commit(cwd) is None:
        return None
    return _git("cat-file", "-e", f"{commit}^{{commit}}", cwd=cwd) is not None


def dvc_tags(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """DVC experiment name/baseline (exported by `dvc exp run`) and the dvc.lock hash."""
    env = os.environ if environ is None else environ
    tags = {tag: env[var] for var, tag in DVC_ENV_TAGS.items() if env.get(var)}
    lock = (cwd or Path.cwd()) / "dvc.lock"
    if lock.is_file():
        tags["robustmer.dvc_lock_sha256"] = sha256_file(lock)
    return tags


def lineage_tags(
    params: Mapping[str, Any], store: FeatureStore, feature_names: Sequence[str]
) -> dict[str, str]:
    """Every lineage tag for a run that reads `feature_names` from `store`."""
    return {
        **git_tags(),
        **dvc_tags(),
        "robustmer.version": __version__,
        "robustmer.dataset": str(params.get("dataset", store.dataset)),
        "robustmer.features": ",".join(sorted(feature_names)),
        "robustmer.features_hash": store.content_hash(feature_names),
        "robustmer.store_path": store.root.as_posix(),
        **gate_tags(),
    }
