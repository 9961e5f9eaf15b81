"""`task: regression` (CMU-MOSI/MOSEI sentiment): config checks, targets, selection, and a run of
the MMSA pickle fixture through acquire, extract, validate, train, evaluate and report."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import eval_outputs
from dataset_fixtures_packs import build_mmsa_pickle

from robustmer.config import ModelSpec, TrainConfig, schema, validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.data.model_data import (
    FoldTensors,
    ModalityInput,
    ModelData,
    Normaliser,
    load_model_data,
    regression_targets,
)
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError, DataError, ValidationFailed
from robustmer.evaluation.report import write_report
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.io import read_json
from robustmer.metrics import (
    METRIC_KEYS,
    REGRESSION_METRIC_KEYS,
    SELECTION_METRICS,
    TASKS,
    VALENCE_METRIC_KEYS,
    regression_metrics,
)
from robustmer.models.registry import build_model, check_models
from robustmer.seeding import seed_everything
from robustmer.training.loop import FitJob, fit
from robustmer.training.runner import train_model
from robustmer.validation.gate import run_gate

FEATURES = {"audio": "mmsa", "video": "mmsa", "text": "bert"}
HEADLINE = ("acc2", "f1", "acc7", "mae", "corr")


def _params(models: dict[str, Any], **train: Any) -> dict[str, Any]:
    params = validate_params(
        {"seed": 1, "dataset": "mosi", "train": train, "models": models}, source="test"
    )
    check_models(params, "test")  # what the model stages check first
    return params


def _model(**kw: Any) -> dict[str, Any]:
    return {"arch": "early_fusion", "features": {"text": "bert"}, **kw}


# --- config -------------------------------------------------------------------------------------


def test_task_defaults_and_task_aware_selection_metric() -> None:
    params = _params({"c": _model(), "r": _model(task="regression")})
    c, r = ModelSpec.from_params(params, "c"), ModelSpec.from_params(params, "r")
    assert (c.task, r.task) == ("classification", "regression")
    # The shared default `ua` means `mae` for the regression model only.
    assert TrainConfig.from_params(params, c).selection_metric == "ua"
    assert TrainConfig.from_params(params, r).selection_metric == "mae"
    for metric in SELECTION_METRICS["regression"]:
        own = _params({"r": _model(task="regression", train={"selection_metric": metric})})
        spec = ModelSpec.from_params(own, "r")
        assert TrainConfig.from_params(own, spec).selection_metric == metric
    shared = _params({"r": _model(task="regression")}, selection_metric="corr")
    assert TrainConfig.from_params(shared, ModelSpec.from_params(shared, "r")).selection_metric == (
        "corr"
    )
    loss = _params({"c": _model()}, selection_metric="loss")  # the task loss suits both tasks
    assert TrainConfig.from_params(loss, ModelSpec.from_params(loss, "c")).selection_metric == (
        "loss"
    )


@pytest.mark.parametrize(
    ("models", "train", "match"),
    [
        ({"r": _model(task="regression", train={"selection_metric": "ua"})}, {},
         r"models\.r\.train\.selection_metric is 'ua', which is not a regression metric"),
        ({"r": _model(task="regression")}, {"selection_metric": "macro_f1"},
         r"train\.selection_metric is 'macro_f1'.*set models\.r\.train\.selection_metric"),
        ({"c": _model()}, {"selection_metric": "mae"},
         r"'mae', which is not a classification metric.*one of wa, ua"),
        ({"c": _model(train={"selection_metric": "acc7"})}, {}, r"models\.c\.train"),
        ({"n": {"arch": "nmer", "features": {"text": "bert"}, "task": "regression"}}, {},
         r"models\.n: arch nmer supports only task: classification"),
        ({"r": _model(task="ranking")}, {}, r"models\.r\.task"),
    ],
    ids=["own-ua", "shared-macro_f1", "vice-versa", "own-acc7", "nmer", "unknown-task"],
)  # fmt: skip
def test_task_and_selection_metric_mismatches_fail_at_load(
    models: dict, train: dict, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _params(models, **train)


def test_schema_enums_match_the_metrics_module() -> None:
    s = schema()
    assert set(s["$defs"]["selection_metric"]["enum"]) == {
        m for task in TASKS for m in SELECTION_METRICS[task]
    }
    assert s["$defs"]["model"]["properties"]["task"]["enum"] == list(TASKS)
    report = s["properties"]["report"]["properties"]["metrics"]["items"]["enum"]
    assert set(report) == set(METRIC_KEYS) | set(REGRESSION_METRIC_KEYS) | set(VALENCE_METRIC_KEYS)


# --- targets ------------------------------------------------------------------------------------


def test_regression_targets_need_a_finite_value_for_labelled_rows(tiny_store: Path) -> None:
    manifest = pd.DataFrame({"sample_id": ["a", "b", "c"], "regression": [0.5, np.nan, -2.0]})
    got = regression_targets(manifest, np.array([True, False, True]), "m.parquet")
    np.testing.assert_array_equal(got, [0.5, np.nan, -2.0])  # unlabelled: NaN, never used
    with pytest.raises(DataError, match=r"m\.parquet: labelled sample 'b' has regression nan"):
        regression_targets(manifest, np.ones(3, bool), "m.parquet")
    features = {"audio": "egemaps_functionals"}  # the classification store of conftest
    params = _params({"r": {**_model(task="regression"), "features": features}})
    spec = ModelSpec.from_params(params, "r")
    with pytest.raises(DataError, match=rf"{tiny_store}/manifest\.parquet: no `regression`"):
        load_model_data(FeatureStore(tiny_store), spec, frame_inputs=False)


# --- selection ----------------------------------------------------------------------------------


def _regression_fold(n: int = 120, seed: int = 0) -> tuple[ModelData, FoldTensors]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.clip(x[:, 0] * 1.5 - x[:, 1] + rng.normal(0, 0.3, n), -3, 3)
    data = ModelData({"text": ModalityInput("text/x", "utterance", x)}, np.zeros(n, np.int64),
                     pd.DataFrame(), ["neutral"], targets=y)  # fmt: skip
    tensors = FoldTensors(data, Normaliser.fit(data, np.arange(80)), torch.device("cpu"))
    return data, tensors


@pytest.mark.parametrize(("metric", "pick"), [("mae", np.argmin), ("loss", np.argmin),
                                              ("corr", np.argmax)])  # fmt: skip
def test_fit_selects_in_the_metric_direction(metric: str, pick: Any) -> None:
    params = _params(
        {"r": _model(task="regression", hidden_dim=16, dropout=0.2)},
        epochs=10, patience=0, lr=0.02, batch_size=16, selection_metric=metric,
    )  # fmt: skip
    spec = ModelSpec.from_params(params, "r")
    cfg = TrainConfig.from_params(params, spec)
    data, tensors = _regression_fold()
    inputs, _, y = tensors.batch(np.arange(4))
    assert y.dtype == torch.float32 and y.tolist() == pytest.approx(data.targets[:4].tolist())
    seed_everything(3)
    model = build_model(spec, data.input_dims, len(data.classes))
    assert model(inputs).shape == (4, 1)  # one output, whatever the class count
    result = fit(FitJob(model, tensors, np.arange(80), np.arange(80, 120), cfg, 1, seed=3))
    curve = [h[f"val_{metric}"] for h in result.history]
    assert result.best_epoch == int(pick(curve)) + 1
    assert result.best_metrics == {k: v for k, v in result.history[result.best_epoch - 1].items()
                                   if k != "epoch"}  # fmt: skip
    assert {f"val_{k}" for k in HEADLINE} <= set(result.best_metrics)


def test_custom_objective_gets_float_targets() -> None:
    params = _params({"r": _model(task="regression", hidden_dim=8)}, epochs=2, patience=0)
    spec = ModelSpec.from_params(params, "r")
    data, tensors = _regression_fold()
    seen: list[torch.dtype] = []

    def objective(m: Any, inputs: Any, lengths: Any, y: torch.Tensor, present: Any) -> Any:
        seen.append(y.dtype)
        return ((m(inputs).squeeze(-1) - y) ** 2).mean()

    model = build_model(spec, data.input_dims, 1)
    cfg = TrainConfig.from_params(params, spec)
    fit(FitJob(model, tensors, np.arange(80), np.arange(80, 120), cfg, 1, seed=0,
               objective=objective))  # fmt: skip
    assert seen and set(seen) == {torch.float32}


# --- the real stages on the MMSA pickle ---------------------------------------------------------


def test_mosi_regression_through_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    pack = tmp_path / "pack" / "aligned_50.pkl"
    build_mmsa_pickle(pack, sizes=(160, 50, 60), dims=(5, 20, 768), seq=6, learnable=True)
    params = validate_params(
        {
            "seed": 3,
            "dataset": "mosi",
            "device": "cpu",
            "acquire": {"mosi": {"path": str(pack.parent)}},
            "train": {"epochs": 25, "patience": 0, "lr": 0.003, "seeds": [1], "num_threads": 1},
            "models": {
                "sentiment": {
                    "arch": "early_fusion",
                    "features": FEATURES,
                    "task": "regression",
                    "hidden_dim": 32,
                    "dropout": 0.1,
                },
            },
            "corrupt": {
                "conditions": {
                    "clean": {"kind": "clean"},
                    "missing_rate": {"kind": "missing_rate", "levels": [0.0, 0.6]},
                }
            },
            "mlflow": {"experiment": "robustmer-tests"},
        }
    )
    raw, store_dir = tmp_path / "raw", tmp_path / "features"
    acquire(params, raw)
    extract(params, raw, store_dir)

    # The gate checks the targets: these pass (only the fixture's split sizes fail) ...
    with pytest.raises(ValidationFailed) as passed:
        run_gate(params, store_dir, tmp_path / "v.json", tmp_path / "docs")
    assert "samples in split 'train'" in str(passed.value)
    assert "`regression`" not in str(passed.value)
    # ... and a NaN target of a labelled sample or one outside MOSI's [-3, 3] fails, named.
    bad = tmp_path / "bad"
    shutil.copytree(store_dir, bad)
    manifest = pd.read_parquet(bad / "manifest.parquet")
    manifest.loc[3, "regression"] = np.nan
    manifest.loc[5, "regression"] = 3.5
    manifest.to_parquet(bad / "manifest.parquet", index=False)
    with pytest.raises(ValidationFailed) as failed:
        run_gate(params, bad, tmp_path / "v2.json", tmp_path / "docs2")
    message = str(failed.value)
    assert "`regression` targets are finite for every labelled sample" in message
    assert "`regression` targets lie in [-3, 3]" in message
    assert manifest.loc[3, "sample_id"] in message and manifest.loc[5, "sample_id"] in message

    model_dir = tmp_path / "model"
    train_model(params, "sentiment", store_dir, model_dir)
    summary = read_json(model_dir / "train_summary.json")
    assert summary["task"] == "regression" and summary["selection_metric"] == "mae"
    (fold,) = summary["folds"]
    assert (fold["n_train"], fold["n_val"], fold["n_test"]) == (160, 50, 60)  # official splits
    # Loss falls, and the kept epoch is the one with the lowest validation MAE.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    history = {
        key: [m.value for m in sorted(client.get_metric_history(fold["mlflow_run_id"], key),
                                      key=lambda m: m.step)]
        for key in ("train_loss", "val_mae")
    }  # fmt: skip
    assert len(history["val_mae"]) == 25
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert fold["best_epoch"] == int(np.argmin(history["val_mae"])) + 1
    assert fold["val"]["val_mae"] == pytest.approx(min(history["val_mae"]))

    metrics = {}
    for condition in ("clean", "missing_rate"):
        corrupt(params, condition, store_dir, tmp_path / condition)
        out = eval_outputs(tmp_path / "results", "sentiment", condition)
        metrics[condition] = evaluate_model(
            params, "sentiment", condition, store_dir, model_dir, tmp_path / condition, out
        )
    clean = metrics["clean"]["levels"]["clean"]
    assert metrics["clean"]["task"] == "regression"
    assert {*HEADLINE, *(f"{k}_std" for k in HEADLINE)} <= set(clean)
    # Better than predicting the training mean on the test split.
    store = FeatureStore(store_dir).manifest
    train_mean = store.loc[store["split"] == "train", "regression"].mean()
    test = store[store["split"] == "test"]
    baseline = float(np.mean(np.abs(test["regression"] - train_mean)))
    assert clean["mae"] < 0.6 * baseline, (clean["mae"], baseline)
    assert clean["corr"] > 0.5
    # Predictions hold values; their MAE is the reported one.
    out = eval_outputs(tmp_path / "results", "sentiment", "clean")
    preds = pd.read_csv(out["predictions"], dtype={"sample_id": str}).set_index("sample_id")
    assert set(preds.index) == set(test["sample_id"])
    actual = test.set_index("sample_id")["regression"]
    np.testing.assert_allclose(preds.loc[actual.index, "actual"], actual, atol=1e-5)
    again = regression_metrics(actual, preds.loc[actual.index, "predicted"])
    assert again["mae"] == pytest.approx(clean["mae"], abs=1e-5)
    assert not any(c.startswith("prob_") for c in preds.columns)
    confusion = pd.read_csv(out["confusion_csv"], index_col=0)
    assert list(confusion.columns) == [str(v) for v in range(-3, 4)]
    assert int(confusion.to_numpy().sum()) == len(test)
    # More missing modalities, worse sentiment (the signal is in the text).
    none, most = metrics["missing_rate"]["levels"].values()
    assert most["mae"] > none["mae"] == pytest.approx(clean["mae"])

    report = write_report(
        params,
        [eval_outputs(tmp_path / "results", "sentiment", c)["scores"] for c in metrics],
        tmp_path / "report",
    )
    results = pd.read_csv(report / "results.csv")
    assert set(HEADLINE) <= set(results["metric"])
    text = (report / "summary.md").read_text()
    for label in ("Acc-2:", "F1:", "Acc-7:", "MAE:", "Corr:"):
        assert label in text
    assert "UA:" not in text  # report.metrics lists only classification metrics: defaults used
    curve = pd.read_csv(report / "curves" / "missing_rate.csv")
    assert "acc2" in curve.columns and len(curve) == 2
    assert (report / "curves" / "missing_rate.png").stat().st_size > 1000
    assert (report / "overview.png").is_file()
