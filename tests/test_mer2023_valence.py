"""MER2023: a valence head beside the class (`task: classification_valence`), its loss, the
valence MSE and the combined score WAF - 0.25 * MSE, through training, evaluation and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_synthetic_store, eval_outputs, tiny_params_dict

from robustmer.config import ModelSpec, validate_params
from robustmer.data.model_data import load_model_data
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError, DataError
from robustmer.metrics import classification_metrics, valence_metrics
from robustmer.models.registry import build_model, check_models
from robustmer.training.loop import class_and_valence_loss, validation_scores

FEATURES = {"audio": "egemaps_functionals", "video": "face_hog_mean", "text": "minilm"}
CONDITIONS = {"clean": {"kind": "clean"}, "missing_pattern": {"kind": "missing_pattern"}}


def test_valence_mse_and_the_combined_score_by_hand() -> None:
    truth = [0, 1, 1, 2]
    pred = [0, 1, 2, 2]
    valence = [1.0, np.nan, -2.0, 0.5]
    predicted = [2.0, 9.0, -1.0, 0.5]  # the NaN row's 9.0 must not count
    got = valence_metrics(truth, pred, 3, valence, predicted)
    mse = (1.0**2 + 1.0**2 + 0.0**2) / 3
    assert got["valence_mse"] == pytest.approx(mse)
    wf1 = classification_metrics(truth, pred, 3)["weighted_f1"]
    assert got["weighted_f1"] == pytest.approx(wf1)
    assert got["mer2023_score"] == pytest.approx(wf1 - 0.25 * mse)
    assert got["n_valence"] == 3
    none = valence_metrics(truth, pred, 3, [np.nan] * 4, predicted)
    assert np.isnan(none["valence_mse"]) and np.isnan(none["mer2023_score"])


def test_loss_is_cross_entropy_plus_mse_over_known_valence() -> None:
    torch.manual_seed(0)
    out = torch.randn(5, 4)  # 3 class logits, then the valence
    y = torch.tensor([[0, 0.5], [2, float("nan")], [1, -1.0], [1, 2.0], [0, float("nan")]])
    ce = torch.nn.functional.cross_entropy(out[:, :3], y[:, 0].long())
    known = [0, 2, 3]
    mse = ((out[known, 3] - y[known, 1]) ** 2).mean()
    assert torch.allclose(class_and_valence_loss(out, y), ce + mse)
    no_valence = y.clone()
    no_valence[:, 1] = float("nan")
    assert torch.allclose(class_and_valence_loss(out, no_valence), ce)
    scores = validation_scores("classification_valence", out, y, 3)
    assert scores["valence_mse"] == pytest.approx(float(mse))


def test_the_head_has_one_more_output_and_the_data_carries_valence(tmp_path: Path) -> None:
    store = FeatureStore(build_synthetic_store(tmp_path / "s", valence=True))
    spec = ModelSpec(name="m", arch="mer2024_attention", features=FEATURES, hidden_dim=8,
                     dropout=0.0, num_layers=1, task="classification_valence")  # fmt: skip
    data = load_model_data(store, spec, frame_inputs=True)
    assert data.task == "classification_valence"
    assert np.isnan(data.valence[::7]).all() and np.isfinite(data.valence[1:7]).all()
    model = build_model(spec, data.input_dims, len(data.classes), data.levels)
    assert model.head.out_features == len(data.classes) + 1
    plain = FeatureStore(build_synthetic_store(tmp_path / "plain"))
    with pytest.raises(DataError, match=r"no `valence` column.*task: classification"):
        load_model_data(plain, spec, frame_inputs=True)


def test_methods_without_a_valence_head_refuse_the_task() -> None:
    raw = tiny_params_dict()
    raw["models"] = {"nmer": {"arch": "nmer", "preset": "builtin_cpu",
                              "task": "classification_valence"}}  # fmt: skip
    with pytest.raises(ConfigError, match="supports only task"):
        check_models(validate_params(raw))
    raw["models"] = {"m": {"arch": "early_fusion", "features": FEATURES,
                           "task": "classification_valence",
                           "train": {"selection_metric": "mae"}}}  # fmt: skip
    with pytest.raises(ConfigError, match="not a classification_valence metric"):
        validate_params(raw)


@pytest.fixture(scope="module")
def valence_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from robustmer.corruption.condition_store import corrupt
    from robustmer.evaluation.report import write_report
    from robustmer.evaluation.runner import evaluate_model
    from robustmer.training.runner import train_model

    root = tmp_path_factory.mktemp("valence")
    store = build_synthetic_store(root / "store", valence=True)
    raw = tiny_params_dict(seeds=[1], epochs=30, patience=10)
    raw["models"] = {
        "attention_v": {"arch": "mer2024_attention", "features": FEATURES, "hidden_dim": 32,
                        "dropout": 0.1, "task": "classification_valence",
                        "train": {"selection_metric": "mer2023_score"},
                        "train_corruption": {"kind": "missing_rate", "rate": 0.3}},
        "fusion_mlp": {"arch": "early_fusion", "features": FEATURES, "hidden_dim": 32},
    }  # fmt: skip
    raw["corrupt"] = {"conditions": CONDITIONS}
    params = validate_params(raw)
    metrics: dict[str, dict] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for model in params["models"]:
            train_model(params, model, store, root / model)
            for c in CONDITIONS:
                corrupt(params, c, store, root / "conditions" / c)
                metrics[f"{model}/{c}"] = evaluate_model(
                    params, model, c, store, root / model, root / "conditions" / c,
                    eval_outputs(root / "eval", model, c),
                )  # fmt: skip
        scores = [eval_outputs(root / "eval", m, c)["scores"] for m in params["models"]
                  for c in CONDITIONS]  # fmt: skip
        write_report(params, scores, root / "report")
    return {"root": root, "store": store, "metrics": metrics}


def test_the_valence_head_learns_both_labels(valence_run: dict) -> None:
    clean = valence_run["metrics"]["attention_v/clean"]["levels"]["clean"]
    assert clean["ua"] > 0.6, clean  # 4 classes: chance is 0.25
    manifest = FeatureStore(valence_run["store"]).manifest
    spread = float(np.nanvar(manifest["valence"]))  # the MSE of always predicting the mean
    assert clean["valence_mse"] < 0.5 * spread, (clean["valence_mse"], spread)
    assert clean["mer2023_score"] == pytest.approx(
        clean["weighted_f1"] - 0.25 * clean["valence_mse"])  # fmt: skip
    plain = valence_run["metrics"]["fusion_mlp/clean"]["levels"]["clean"]
    assert "valence_mse" not in plain


def test_every_missing_pattern_is_scored_with_valence(valence_run: dict) -> None:
    patterns = valence_run["metrics"]["attention_v/missing_pattern"]["levels"]
    assert len(patterns) == 6
    for name, level in patterns.items():
        assert level["ua"] > 0.3 and np.isfinite(level["valence_mse"]), name


def test_scores_predictions_and_report_carry_the_valence(valence_run: dict) -> None:
    out = eval_outputs(valence_run["root"] / "eval", "attention_v", "clean")
    scores = pd.read_csv(out["scores"])
    assert {"valence_mse", "mer2023_score", "weighted_f1"} <= set(scores["metric"])
    per_fold = scores[scores["fold"] != "all"].pivot_table(index="fold", columns="metric",
                                                           values="value")  # fmt: skip
    np.testing.assert_allclose(per_fold["mer2023_score"],
                               per_fold["weighted_f1"] - 0.25 * per_fold["valence_mse"],
                               atol=1e-5)  # fmt: skip
    predictions = pd.read_csv(out["predictions"])
    assert {"valence_actual", "valence_predicted"} <= set(predictions.columns)
    probs = predictions.filter(like="prob_")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)  # the valence is not a class
    known = predictions["valence_actual"].notna()
    mse = ((predictions["valence_predicted"] - predictions["valence_actual"])[known] ** 2).mean()
    pooled = scores[(scores["fold"] == "all") & (scores["metric"] == "valence_mse")]["value"]
    assert float(pooled.iloc[0]) == pytest.approx(mse, rel=1e-4)
    summary = (valence_run["root"] / "report" / "summary.md").read_text()
    assert "MER2023 score" in summary and "Valence MSE" in summary
    assert "WF1 - 0.25 * Valence MSE" in summary
