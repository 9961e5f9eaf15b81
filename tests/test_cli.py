"""The CLI's exit codes and messages: what DVC and Snakemake see when a stage refuses to run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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
    assert (tmp_path / "results/builtin/validation.json").is_file()
    assert "finished in" not in proc.stderr  # no success line for a failed stage


def test_help_is_not_reported_as_a_finished_stage(tmp_path: Path) -> None:
    proc = robustmer(tmp_path, "train", "--help")
    assert proc.returncode == 0 and "Train one model" in proc.stdout
    assert "finished in" not in proc.stderr


def test_progress_is_logged_as_lines_when_not_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A SLURM log is not a terminal: tqdm would stay silent there for the whole stage."""
    from robustmer.features.base import parallel_map

    monkeypatch.delenv("ROBUSTMER_NO_PROGRESS", raising=False)
    monkeypatch.setenv("ROBUSTMER_PROGRESS_EVERY_S", "0")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with caplog.at_level("INFO", logger="robustmer.progress"):
        assert parallel_map(abs, [-1, -2, -3], 1, "demo", unit="file") == [1, 2, 3]
    lines = [r.getMessage() for r in caplog.records if r.name == "robustmer.progress"]
    assert lines[0].startswith("demo: 1/3 file(s) (33%)") and "left" in lines[0]
    assert lines[-1].startswith("demo: 3/3 file(s) in")


def test_a_failed_gate_stops_the_stages_that_read_its_store(tmp_path: Path) -> None:
    """As DVC and Snakemake do; --force goes on and is recorded on the MLflow run."""
    import mlflow

    params = tiny_params_dict(epochs=2)
    params["models"] = {"fusion_mlp": params["models"]["fusion_mlp"]}
    params["validate"]["min_samples_per_class"] = 1000  # the gate fails on class counts
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    store = build_synthetic_store(tmp_path / "data/features/builtin", n_speakers=4, per_speaker=8)
    assert robustmer(tmp_path, "validate").returncode == 3
    for args in (
        ("train", "fusion_mlp"),
        ("corrupt", "clean"),
        ("evaluate", "fusion_mlp", "clean"),
    ):
        proc = robustmer(tmp_path, *args)
        assert proc.returncode == 3, proc.stderr
        assert "validation gate failed" in proc.stderr and f"robustmer {args[0]} ... --force" in (
            proc.stderr.replace("\n", " ")
        )
    uri = f"sqlite:///{tmp_path}/m.db"
    forced = subprocess.run(
        [sys.executable, "-m", "robustmer.cli", "train", "fusion_mlp", "--force"],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(r.data.tags.get("robustmer.gate_forced") == "true" for r in runs)
    # A re-extracted store (another store.json) is not judged by the old verdict.
    info = store / "store.json"
    info.write_text(info.read_text().replace("{", '{"re-extracted": true,', 1))
    assert "validation gate" not in robustmer(tmp_path, "corrupt", "clean").stderr


def test_features_lists_names_levels_and_dims(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    build_synthetic_store(tmp_path / "data/features/builtin", n_speakers=4, per_speaker=8)
    proc = robustmer(tmp_path, "features")
    assert proc.returncode == 0, proc.stderr
    from robustmer.data.store import FeatureStore

    rows = {line.split()[0]: line.split()[1:3] for line in proc.stdout.splitlines()[2:]}
    store = FeatureStore(tmp_path / "data/features/builtin")
    assert rows == {n: [store.meta(n).level, str(store.meta(n).dim)] for n in store.feature_names()}
    assert rows["video/face_hog"][0] == "frame"
    missing = robustmer(tmp_path, "features", "emodb")
    assert missing.returncode == 2 and "robustmer extract" in missing.stderr


def test_a_model_the_dataset_cannot_feed_is_skipped_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    audio = {"audio/egemaps_functionals": ("utterance", 8, 1.0)}
    build_synthetic_store(tmp_path / "data/features/builtin", n_speakers=4, features=audio)
    proc = robustmer(tmp_path, "train", "fusion_mlp")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert len(lines) == 1 and "has no video or text features" in lines[0], proc.stderr
    assert proc.stdout == ""  # no "trained fusion_mlp into ..."
    assert "skipped" in (tmp_path / "models/builtin/fusion_mlp/train_summary.json").read_text()
