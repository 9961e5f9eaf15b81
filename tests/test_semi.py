"""MER2024-SEMI through the pipeline: a pooled store, contrastive pretraining, self-training.

The synthetic store withholds half of each speaker's labels (the built-in corpus's pool
mechanism); the recipe must pretrain on labelled + pool rows, pseudo-label the pool with the
voted classifier at exactly the configured thresholds, retrain, and be scored on labelled test
rows only. The network and loss pieces are tested in test_semi_parts.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_synthetic_store, eval_outputs, tiny_params_dict

from robustmer.config import ModelSpec, TrainConfig, validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.builtin.generate import withhold_labels
from robustmer.data.model_data import FoldTensors, Normaliser, data_folds, load_model_data
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError
from robustmer.evaluation.runner import evaluate_model
from robustmer.io import read_json
from robustmer.models.registry import check_models
from robustmer.training.loop import FitJob, fit
from robustmer.training.runner import pretrain_model, train_model

FEATURES = {"audio": "egemaps_functionals", "video": "face_hog_mean", "text": "minilm"}
CONDITIONS = {"clean": {"kind": "clean"}, "missing": {"kind": "missing_rate", "levels": [0.5]}}


def semi_params(**options: object) -> dict:
    raw = tiny_params_dict()
    raw["models"] = {
        "semi": {
            "arch": "semi",
            "features": FEATURES,
            "hidden_dim": 32,
            "dropout": 0.1,
            "options": {"ff_dim": 32, "threshold": 0.9, "thresholds": {}, **options},
            "pretrain": {"epochs": 4, "batch_size": 32},
            # by validation loss: a confident teacher (UA ties at 1.0 after one epoch here)
            "train": {"epochs": 12, "batch_size": 16, "lr": 0.003, "selection_metric": "loss"},
        }
    }
    raw["corrupt"] = {"conditions": CONDITIONS}
    return validate_params(raw)


@pytest.fixture(scope="module")
def pooled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pooled")
    return build_synthetic_store(root, n_speakers=6, per_speaker=20, unlabelled_fraction=0.5)


@pytest.fixture(scope="module")
def semi_run(pooled_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("semi")
    params = semi_params(rounds=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for c in CONDITIONS:
            corrupt(params, c, pooled_store, root / "conditions" / c)
        pretrain_model(params, "semi", pooled_store, root / "semi.pretrain")
        train_model(
            params, "semi", pooled_store, root / "semi", pretrain_dir=root / "semi.pretrain"
        )
        metrics = {
            c: evaluate_model(params, "semi", c, pooled_store, root / "semi",
                              root / "conditions" / c, eval_outputs(root / "eval", "semi", c))
            for c in CONDITIONS
        }  # fmt: skip
        yield {"root": root, "params": params, "metrics": metrics}


def test_the_pool_is_withheld_per_speaker_and_kept_for_scoring() -> None:
    frame = pd.DataFrame({"speaker": np.repeat(["a", "b"], 10),
                          "label": ["x", "y"] * 10})  # fmt: skip
    out = withhold_labels(frame, 0.3, seed=1)
    pool = out["label"] == ""
    assert pool.groupby(out["speaker"]).sum().tolist() == [3, 3]
    assert (out.loc[pool, "withheld_label"] == frame.loc[pool, "label"]).all()
    assert (out.loc[~pool, "label"] == frame.loc[~pool, "label"]).all()
    assert out.equals(withhold_labels(frame, 0.3, seed=1))  # seeded
    assert withhold_labels(frame, 0.0, seed=1) is frame  # no pool: the corpus unchanged


def test_folds_offer_the_pool_except_held_out_speakers(pooled_store: Path) -> None:
    params = semi_params()
    spec = ModelSpec.from_params(params, "semi")
    data = load_model_data(FeatureStore(pooled_store), spec, frame_inputs=False)
    assert data.withheld is not None and (data.withheld[data.labels < 0] >= 0).all()
    speakers = data.manifest["speaker"].to_numpy()
    for split in data_folds(data, 1, params["seed"]):
        assert len(split.unlabelled) > 0
        assert (data.labels[split.unlabelled] == -1).all()
        assert not set(speakers[split.unlabelled]) & set(split.test_speakers + split.val_speakers)
        assert (data.labels[split.test] >= 0).all()  # pool rows are never scored


def test_pretraining_uses_the_pool_and_keeps_the_last_epoch(semi_run: dict) -> None:
    summary = read_json(semi_run["root"] / "semi.pretrain" / "pretrain_summary.json")
    for fold in summary["folds"]:
        assert fold["extra"]["n_unlabelled"] > 0
        assert fold["extra"]["n_rows"] == fold["n_train"] + fold["extra"]["n_unlabelled"]
        assert fold["best_epoch"] == fold["epochs_run"] == 4  # no label to select an epoch by
        assert set(fold["val"]) == {"train_loss"}


def test_self_training_rounds_record_counts_and_accuracy(semi_run: dict) -> None:
    summary = read_json(semi_run["root"] / "semi" / "train_summary.json")
    classes = summary["classes"]
    for fold in summary["folds"]:
        rounds = fold["extra"]["pseudo_labels"]
        assert [r["round"] for r in rounds] == [1, 2]
        for r in rounds:
            assert set(r["counts"]) == set(classes)
            assert sum(r["counts"].values()) <= r["n_pool"] == fold["extra"]["n_unlabelled"]
            assert all(r["correct"][c] <= r["counts"][c] for c in classes)
            assert r["thresholds"] == {c: 0.9 for c in classes}
            assert r["seconds"] > 0  # one round's time: labelling the pool + the student
        assert fold["extra"]["round_0_seconds"] > 0
    picked = sum(sum(r["counts"].values()) for f in summary["folds"]
                 for r in f["extra"]["pseudo_labels"])  # fmt: skip
    assert picked > 0
    accuracies = [r["accuracy"] for f in summary["folds"] for r in f["extra"]["pseudo_labels"]
                  if sum(r["counts"].values())]  # fmt: skip
    assert np.mean(accuracies) > 0.5  # confident pseudo-labels of a learnable store are good


def test_semi_learns_and_is_scored_on_labelled_rows(semi_run: dict) -> None:
    clean = semi_run["metrics"]["clean"]["levels"]["clean"]
    assert clean["ua"] > 0.5  # 4 classes: chance 0.25
    predictions = pd.read_csv(semi_run["root"] / "eval" / "predictions" / "clean" / "semi.csv")
    assert predictions["actual"].notna().all() and (predictions["actual"] != "").all()
    missing = semi_run["metrics"]["missing"]["levels"]
    assert np.isfinite(next(iter(missing.values()))["ua"])


def test_thresholds_of_one_keep_nothing(
    pooled_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = semi_params(threshold=1.0, contrastive_pretraining=False, oversample=False)
    params["train"]["seeds"] = [1]
    pretrain_model(params, "semi", pooled_store, tmp_path / "semi.pretrain")
    train_model(params, "semi", pooled_store, tmp_path / "semi", pretrain_dir=tmp_path / "x")
    summary = read_json(tmp_path / "semi" / "train_summary.json")
    for fold in summary["folds"]:
        (record,) = fold["extra"]["pseudo_labels"]
        assert sum(record["counts"].values()) == 0


def test_without_pseudo_labels_there_is_no_round(
    pooled_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = semi_params(pseudo_labels=False, contrastive_pretraining=False)
    params["train"]["seeds"] = [1]
    train_model(params, "semi", pooled_store, tmp_path / "semi", pretrain_dir=tmp_path / "x")
    summary = read_json(tmp_path / "semi" / "train_summary.json")
    assert all(f["extra"]["pseudo_labels"] == [] for f in summary["folds"])


def test_bad_semi_entries_are_refused() -> None:
    cases = [
        ({"rounds": -1}, "rounds"),
        ({"vote_weights": [1, 2]}, "vote_weights"),
        ({"threshold": 1.5}, r"\[0, 1\]"),
        ({"treshold": 0.9}, "treshold"),
    ]
    for options, match in cases:
        with pytest.raises(ConfigError, match=match):
            check_models(semi_params(**options))
    two = semi_params()
    two["models"]["semi"]["features"] = {"audio": "egemaps_functionals", "text": "minilm"}
    with pytest.raises(ConfigError, match="fuses audio, video and text"):
        check_models(two)


def test_pseudo_labels_replace_only_their_rows(pooled_store: Path) -> None:
    params = semi_params()
    spec = ModelSpec.from_params(params, "semi")
    data = load_model_data(FeatureStore(pooled_store), spec, frame_inputs=False)
    tensors = FoldTensors(data, Normaliser.fit(data, np.flatnonzero(data.labels >= 0)),
                          torch.device("cpu"))  # fmt: skip
    pool = np.flatnonzero(data.labels < 0)[:5]
    out = tensors.with_labels(pool, np.array([0, 1, 2, 3, 0]))
    assert out.labels[pool].tolist() == [0, 1, 2, 3, 0]
    assert (tensors.labels[pool] == -1).all()  # the original is untouched
    rest = np.setdiff1d(np.arange(len(data)), pool)
    assert torch.equal(out.labels[rest], tensors.labels[rest])
    assert out.values["audio"] is tensors.values["audio"]  # features shared, not copied


def test_fit_keep_last_trains_every_epoch_without_validation(pooled_store: Path) -> None:
    params = semi_params()
    spec = ModelSpec.from_params(params, "semi")
    cfg = TrainConfig.from_params(params, spec, "pretrain")
    data = load_model_data(FeatureStore(pooled_store), spec, frame_inputs=False)
    rows = np.arange(len(data))
    tensors = FoldTensors(data, Normaliser.fit(data, rows), torch.device("cpu"))
    from robustmer.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(spec, data.input_dims, len(data.classes))
    generator = torch.Generator().manual_seed(0)
    result = fit(FitJob(model, tensors, rows, np.zeros(0, dtype=np.int64), cfg, 4, seed=0,
                        objective=lambda m, x, lengths, y, p: m.pretrain_loss(x, generator)[0],
                        keep="last"))  # fmt: skip
    assert result.best_epoch == result.epochs_run == cfg.epochs
    assert [h["epoch"] for h in result.history] == list(range(1, cfg.epochs + 1))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    for key, value in model.state_dict().items():
        assert torch.equal(result.state_dict[key], value.cpu())


def test_report_shows_pseudo_labels_per_class_and_round(semi_run: dict) -> None:
    from robustmer.evaluation.report import write_report

    root = semi_run["root"]
    scores = [root / "eval" / "scores" / "semi" / f"{c}.csv" for c in CONDITIONS]
    out = write_report(semi_run["params"], scores, root / "report",
                       {"semi": root / "semi" / "train_summary.json"})  # fmt: skip
    table = pd.read_csv(out / "pseudo_labels.csv")
    summary = read_json(root / "semi" / "train_summary.json")
    assert sorted(table["round"].unique()) == [1, 2]
    records = [r for f in summary["folds"] for r in f["extra"]["pseudo_labels"]]
    expected = sum(r["counts"]["happy"] for r in records)
    assert table.loc[table["class"] == "happy", "n"].sum() == expected
    text = (out / "summary.md").read_text()
    assert "## Pseudo-labels (self-training)" in text and "semi, round 2" in text
