"""Real corpus samples (../shared/data) through acquire, extract, validate, train and evaluate.

These are the integration tests of the dataset adapters on files as their authors distribute
them. They skip, saying why, where the samples are absent (a user's fresh clone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.data.store import FeatureStore
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.training.runner import train_model
from robustmer.validation.gate import run_gate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.shared_data


def needs(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real-corpus samples ship beside the project only")
    return path


def params_for(dataset: str, source: Path, models: dict[str, Any], **options: Any) -> dict:
    return validate_params(
        {
            "seed": 5,
            "dataset": dataset,
            "device": "cpu",
            "acquire": {dataset: {"path": str(source), **options}},
            "train": {"epochs": 40, "patience": 10, "lr": 0.002, "seeds": [1], "num_threads": 1},
            "models": models,
            "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
            "mlflow": {"experiment": "robustmer-tests"},
        }
    )


def run_pipeline(params: dict, model: str, root: Path, mp: pytest.MonkeyPatch) -> dict:
    """Every stage of the DVC pipeline for one model on the clean condition; its metrics."""
    from conftest import eval_outputs

    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    mp.setenv("ROBUSTMER_NO_PROGRESS", "1")
    raw, store = root / "raw", root / "features"
    acquire(params, raw)
    extract(params, raw, store)
    run_gate(params, store, root / "validation.json", root / "docs")
    train_model(params, model, store, root / "models" / model)
    corrupt(params, "clean", store, root / "clean")
    return evaluate_model(
        params, model, "clean", store, root / "models" / model, root / "clean",
        eval_outputs(root / "results", model, "clean"),
    )  # fmt: skip


def test_emodb_wavs_with_opensmile_and_speaker_independent_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = needs("emodb")
    models = {"audio_mlp": {"arch": "early_fusion", "features": {"audio": "egemaps_functionals"}}}
    metrics = run_pipeline(params_for("emodb", source, models), "audio_mlp", tmp_path, monkeypatch)
    store = FeatureStore(tmp_path / "features")
    assert len(store) == 535 and store.manifest["speaker"].nunique() == 10
    assert store.manifest["fold"].nunique() == 5
    summary = json.loads((tmp_path / "validation.json").read_text())
    assert summary["success"] and summary["tables"]["dataset"]["n_failed"] == 0
    assert metrics["levels"]["clean"]["ua"] > 0.5  # 7 classes: chance is 0.14


def test_ravdess_feature_tables_as_an_audio_video_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = needs("ravdess")
    features = {"audio": "summary", "video": "summary"}
    models = {"av_mlp": {"arch": "early_fusion", "features": features, "dropout": 0.3}}
    params = params_for("ravdess_features", source, models)
    metrics = run_pipeline(params, "av_mlp", tmp_path, monkeypatch)
    store = FeatureStore(tmp_path / "features")
    assert len(store) == 360 and store.manifest["speaker"].nunique() == 24
    folds = store.manifest.groupby("fold")["speaker"].nunique()
    assert (folds == 4).all()  # actor-independent: each actor in exactly one fold
    chance = 1 / len(store.classes)
    assert metrics["levels"]["clean"]["ua"] > chance + 0.2


def test_meld_text_with_its_official_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = needs("meld")
    models = {"text_mlp": {"arch": "early_fusion", "features": {"text": "minilm"}}}
    subset = {"train": 1500, "valid": 300, "test": 600}
    params = params_for("meld", source, models, clips=False, max_per_split=subset)
    metrics = run_pipeline(params, "text_mlp", tmp_path, monkeypatch)
    manifest = FeatureStore(tmp_path / "features").manifest
    assert manifest["split"].value_counts().to_dict() == {"train": 1500, "test": 600, "valid": 300}
    predictions = tmp_path / "results" / "predictions" / "clean" / "text_mlp.csv"
    assert len(predictions.read_text().splitlines()) == 600 + 1  # only the test split is scored
    clean = metrics["levels"]["clean"]
    assert clean["ua"] > 0.2 and clean["wa"] > 0.45  # 7 classes; majority-class UA is 0.14
