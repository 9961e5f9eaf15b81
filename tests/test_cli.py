"""The CLI's exit codes and messages: what DVC and Snakemake see when a stage refuses to run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from conftest import build_synthetic_store, tiny_params_dict


def robustmer(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "robustmer.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def test_bad_params_exit_2_naming_the_key(tmp_path: Path) -> None:
    params = tiny_params_dict()
    params["train"]["epochs"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = robustmer(tmp_path, "train", "fusion_mlp")
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_store_exit_2_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    proc = robustmer(tmp_path, "validate")
    assert proc.returncode == 2
    assert "robustmer extract" in proc.stderr


def test_validation_failure_exit_3_names_the_sample(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    store = build_synthetic_store(tmp_path / "data/features/builtin", n_speakers=4, per_speaker=8)
    values_path = store / "features/audio/egemaps_functionals.values.npy"
    values = np.load(values_path)
    values[5, 0] = np.nan  # utterance 5 (utt0005) gets a NaN
    np.save(values_path, values)
    proc = robustmer(tmp_path, "validate")
    assert proc.returncode == 3, proc.stderr
    assert "utt0005" in proc.stderr
    assert (tmp_path / "results/validation/builtin.json").is_file()
    assert "finished in" not in proc.stderr  # no success line for a failed stage
