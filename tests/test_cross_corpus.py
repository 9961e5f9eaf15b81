"""Cross-corpus evaluation: a model of one dataset scored on another through shared classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, DEFAULT_FEATURES, build_synthetic_store

from robustmer import paths
from robustmer.config import validate_params
from robustmer.errors import ConfigError, DataError

# The test corpus names the same four emotions its own way, in the same order, so each of its
# classes has the feature pattern of the training class at the same index.
TEST_CLASSES = ("calm", "joy", "anger", "sadness")
LABEL_MAPS = {
    # `sad` maps to nothing on the training side: three shared classes remain.
    "builtin": {"neutral": "neutral", "happy": "happy", "angry": "angry"},
    "folder": {"calm": "neutral", "joy": "happy", "anger": "angry", "sadness": "sad"},
}
MODEL = "audio_video"


def params(**cell: Any) -> dict[str, Any]:
    model = {
        "arch": "early_fusion",
        "hidden_dim": 32,
        "dropout": 0.1,
        "features": {"audio": "egemaps_functionals", "video": "face_hog_mean"},
    }
    conditions = {
        "clean": {"kind": "clean"},
        "missing": {"kind": "missing_rate", "levels": [0.0, 0.5]},
    }
    evaluation = {"train": "builtin", "test": "folder", "models": [MODEL], **cell}
    train = {"epochs": 15, "batch_size": 16, "patience": 0, "lr": 0.003, "num_threads": 1}
    return validate_params(
        {
            "seed": 7,
            "datasets": ["builtin", "folder"],
            "dataset": "builtin",
            "device": "cpu",
            "train": {**train, "seeds": [1]},
            "models": {MODEL: model},
            "corrupt": {"conditions": conditions},
            "cross_corpus": {
                "label_maps": LABEL_MAPS,
                "evaluations": {"builtin_on_folder": evaluation},
            },
            "mlflow": {"experiment": "robustmer-tests"},
        }
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained model on `builtin` and a `folder` store of the same patterns, other labels."""
    from robustmer.corruption.condition_store import corrupt
    from robustmer.training.runner import train_model

    root = tmp_path_factory.mktemp("cross")
    p = params(conditions=["clean", "missing"])
    build_synthetic_store(root / paths.feature_dir("builtin"), n_speakers=6, per_speaker=20)
    build_synthetic_store(root / paths.feature_dir("folder"), n_speakers=6, per_speaker=20,
                          classes=TEST_CLASSES)  # fmt: skip
    folder = validate_params({**p, "dataset": "folder"})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        train_model(p, MODEL, paths.feature_dir("builtin"), paths.model_dir("builtin", MODEL))
        for condition in ("clean", "missing"):
            corrupt(folder, condition, paths.feature_dir("folder"),
                    paths.corrupted_dir("folder", condition))  # fmt: skip
    return root


def run(root: Path, monkeypatch: pytest.MonkeyPatch, **cell: Any) -> dict[str, Any]:
    from robustmer.evaluation.cross_corpus import evaluate_cross_corpus

    monkeypatch.chdir(root)
    return evaluate_cross_corpus(params(**cell), "builtin_on_folder")


def test_scores_the_shared_classes_through_both_maps(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = run(project, monkeypatch, conditions=["clean", "missing"])
    assert metrics["shared_classes"] == ["neutral", "happy", "angry"]
    clean = metrics["models"][MODEL]["clean"]["clean"]
    # The same patterns under other names: mapped by name, the model is right far above chance
    # (1/3); mapped by class index instead, `sad` rows would count and UA would fall.
    assert clean["ua"] > 0.8, clean
    out = project / paths.cross_corpus_dir("builtin_on_folder")
    scores = pd.read_csv(out / "scores.csv", dtype={"fold": str, "level": str})
    assert list(scores.columns[:2]) == ["train_dataset", "test_dataset"]
    assert set(scores["train_dataset"]) == {"builtin"} and set(scores["test_dataset"]) == {"folder"}
    assert set(scores["fold"]) == {"0", "1", "2", "ensemble"}
    preds = pd.read_csv(out / "predictions.csv")
    # Only rows of a shared class are scored: 3 of every speaker's 4 classes.
    assert preds.query("condition == 'clean'")["sample_id"].nunique() == 6 * 15
    assert set(preds["actual"]) == set(preds["predicted"]) == {"neutral", "happy", "angry"}
    # The missing-rate condition of the test dataset applies: rate 0 is clean, 0.5 costs.
    missing = metrics["models"][MODEL]["missing"]
    assert missing["0"]["ua"] == clean["ua"]
    assert missing["0.5"]["ua"] < clean["ua"]
    assert (project / paths.cross_corpus_metrics("builtin_on_folder")).is_file()
    assert "trained on `builtin`, tested on `folder`" in (out / "summary.md").read_text()


def test_ensemble_is_the_mean_of_the_fold_models_shared_probabilities(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(project, monkeypatch)
    preds = pd.read_csv(project / paths.cross_corpus_dir("builtin_on_folder") / "predictions.csv")
    probs = preds[["prob_neutral", "prob_happy", "prob_angry"]].to_numpy()
    # Probabilities of the training classes that map to no shared class (sad) are dropped.
    assert (probs.sum(1) <= 1 + 1e-5).all() and (probs.sum(1) < 1 - 1e-3).any()
    assert (np.asarray(["neutral", "happy", "angry"])[probs.argmax(1)] == preds["predicted"]).all()


def test_a_feature_made_differently_is_refused(tmp_path: Path) -> None:
    from robustmer.data.store import FeatureStore
    from robustmer.evaluation.cross_corpus import check_same_features

    other = {**DEFAULT_FEATURES, "audio/egemaps_functionals": ("utterance", 7, 0.8)}
    a = FeatureStore(build_synthetic_store(tmp_path / "a", n_speakers=2, per_speaker=4))
    b = FeatureStore(build_synthetic_store(tmp_path / "b", n_speakers=2, per_speaker=4,
                                           features=other))  # fmt: skip
    spec_params = params()
    from robustmer.config import ModelSpec

    spec = ModelSpec.from_params(spec_params, MODEL)
    with pytest.raises(DataError, match="audio/egemaps_functionals differs between"):
        check_same_features(a, b, spec)
    without = {k: v for k, v in DEFAULT_FEATURES.items() if not k.startswith("video/")}
    c = FeatureStore(build_synthetic_store(tmp_path / "c", n_speakers=2, per_speaker=4,
                                           features=without))  # fmt: skip
    with pytest.raises(DataError, match="no feature 'video/face_hog_mean'"):
        check_same_features(a, c, spec)


def test_label_maps_are_checked(tmp_path: Path) -> None:
    from robustmer.evaluation.cross_corpus import class_map, shared_classes

    with pytest.raises(ConfigError, match="share no class"):
        shared_classes({"builtin": {"sad": "sad"}, "folder": {"joy": "happy"}}, "builtin",
                       "folder")  # fmt: skip
    with pytest.raises(ConfigError, match=r"\['happyy'\] are not classes of the store"):
        class_map(list(CLASSES), {"happyy": "happy"}, ["happy"], "cross_corpus.label_maps.x")
    assert class_map(list(CLASSES), {"happy": "happy"}, ["happy"], "x").tolist() == [-1, 0, -1, -1]
    bad = params()
    bad["cross_corpus"]["evaluations"]["builtin_on_folder"]["test"] = "emodb"
    with pytest.raises(ConfigError, match=r"test: 'emodb' is not in `datasets`"):
        validate_params(bad)
    same = params()
    same["cross_corpus"]["evaluations"]["builtin_on_folder"]["test"] = "builtin"
    with pytest.raises(ConfigError, match="already scores a dataset on itself"):
        validate_params(same)


def test_extractor_options_ignore_what_one_run_found() -> None:
    """Two stores extracted the same way differ in their statistics, never in their options."""
    from robustmer.data.store import FeatureMeta

    def meta(**params: object) -> FeatureMeta:
        return FeatureMeta("audio", "egemaps", "utterance", 88, params=dict(params))

    same = meta(feature_set="eGeMAPSv02", stats={"mean": 1.0}, n_placeholders=0)
    other_run = meta(feature_set="eGeMAPSv02", stats={"mean": 2.0}, n_placeholders=3)
    assert same.options() == other_run.options() == {"feature_set": "eGeMAPSv02"}
    assert meta(feature_set="ComParE_2016").options() != same.options()
