"""Raw corpora in their distributed layouts (RAVDESS names, a labels.csv folder) through acquire,
extract (openSMILE, face HOG, MiniLM), train and evaluate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import eval_outputs
from dataset_fixtures_raw import build_folder, build_ravdess

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.data.store import FeatureStore
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.io import read_json
from robustmer.training.runner import train_model


def run(dataset: str, source: Path, features: dict, root: Path, **options: object) -> dict:
    params = validate_params(
        {
            "seed": 3,
            "dataset": dataset,
            "device": "cpu",
            "acquire": {dataset: {"path": str(source), "n_folds": 2, **options}},
            "extract": {"workers": 1},
            "train": {"epochs": 3, "patience": 0, "seeds": [1], "num_threads": 1},
            "models": {"fusion": {"arch": "early_fusion", "features": features}},
            "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
            "mlflow": {"experiment": "robustmer-tests"},
        }
    )
    acquire(params, root / "raw")
    extract(params, root / "raw", root / "features")
    train_model(params, "fusion", root / "features", root / "model")
    corrupt(params, "clean", root / "features", root / "clean")
    out = eval_outputs(root / "results", "fusion", "clean")
    evaluate_model(
        params, "fusion", "clean", root / "features", root / "model", root / "clean", out
    )
    return {
        "predictions": pd.read_csv(out["predictions"]),
        "store": FeatureStore(root / "features"),
    }


def test_ravdess_names_to_audio_and_video_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    source = build_ravdess(tmp_path / "RAVDESS", emotions=(1, 3, 4, 5))
    features = {"audio": "egemaps_functionals", "video": "face_hog_mean"}
    out = run("ravdess", source, features, tmp_path)
    store = out["store"]
    assert len(store) == 16 and set(store.manifest["label"]) == {"neutral", "happy", "sad", "angry"}
    assert {"audio/egemaps_functionals", "video/face_hog_mean"} <= set(store.feature_names())
    assert "text/minilm" not in store.feature_names()  # RAVDESS text carries no emotion
    corpus = read_json(tmp_path / "raw" / "corpus.json")
    assert corpus["licence"].startswith("CC BY-NC-SA") and corpus["dataset"] == "ravdess"
    assert len(out["predictions"]) == 16  # every actor tested once across the two folds


def test_a_folder_with_labels_csv_is_a_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    source = build_folder(tmp_path / "mine")
    out = run("folder", source, {"audio": "egemaps_functionals", "text": "minilm"}, tmp_path)
    manifest = out["store"].manifest
    assert sorted(manifest["speaker"].unique()) == ["ann", "bob", "cat", "dan"]
    assert manifest.groupby("speaker")["fold"].nunique().max() == 1
    assert set(out["predictions"]["speaker"]) == {"ann", "bob", "cat", "dan"}
