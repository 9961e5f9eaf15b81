"""train_model -> evaluate_model -> write_report on the tiny store, with MLflow in a temp SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from robustmer.errors import DataError
from robustmer.evaluation.report import write_report
from robustmer.evaluation.runner import evaluate_model
from robustmer.tracking import mlflow_run
from robustmer.tracking.lineage import dvc_tags, git_tags
from robustmer.training.runner import train_model

MODELS = ("fusion_mlp", "attention_lstm")


def evaluate(params: dict, name: str, store: Path, models: Path, results: Path) -> dict:
    return evaluate_model(
        params,
        name,
        store,
        models / name,
        metrics_path=results / "metrics" / f"{name}.json",
        predictions_path=results / "predictions" / f"{name}.csv",
        confusion_path=results / "plots" / f"{name}_confusion.png",
    )


@pytest.fixture(scope="module")
def pipeline(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Train and evaluate both tiny models once, then once more for the determinism check."""
    from conftest import tiny_params_dict

    root = tmp_path_factory.mktemp("pipeline")
    params = tiny_params_dict()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("DVC_EXP_NAME", "tiny-exp")
        mp.delenv("DVC_EXP_BASELINE_REV", raising=False)
        metrics = {}
        for name in MODELS:
            train_model(params, name, tiny_store, root / "models" / name)
            metrics[name] = evaluate(params, name, tiny_store, root / "models", root / "results")
        report = write_report(
            params, [root / "results" / "metrics" / f"{m}.json" for m in MODELS], root / "report"
        )
        # The same params again, into other folders (and new MLflow runs).
        train_model(params, "fusion_mlp", tiny_store, root / "again" / "fusion_mlp")
        again = evaluate(params, "fusion_mlp", tiny_store, root / "again", root / "again_results")
        yield {
            "root": root,
            "params": params,
            "metrics": metrics,
            "again": again,
            "report": report,
            "uri": f"sqlite:///{root}/mlflow.db",
        }


def test_outputs_exist_and_metrics_beat_chance(pipeline: dict, tiny_store: Path) -> None:
    root = pipeline["root"]
    n = len(pd.read_parquet(tiny_store / "manifest.parquet"))
    for name in MODELS:
        m = pipeline["metrics"][name]
        on_disk = json.loads((root / "results" / "metrics" / f"{name}.json").read_text())
        assert on_disk == json.loads(json.dumps(m))
        for key in ("wa", "ua", "weighted_f1", "macro_f1"):
            assert 0.0 <= m[key] <= 1.0
            assert set(m["fold_mean"]) >= {key} and set(m["fold_std"]) >= {key}
        assert m["ua"] > 0.6, m  # chance is 0.25
        assert m["n_samples"] == n and m["n_folds"] == 3
        assert sorted(m["per_fold"]) == ["0", "1", "2"]
        preds = pd.read_csv(root / "results" / "predictions" / f"{name}.csv")
        assert list(preds.columns[:5]) == ["sample_id", "speaker", "fold", "actual", "predicted"]
        assert [c for c in preds.columns if c.startswith("prob_")] == [
            "prob_neutral", "prob_happy", "prob_angry", "prob_sad"
        ]  # fmt: skip
        assert len(preds) == n and preds["sample_id"].is_unique
        assert (preds["actual"] == preds["predicted"]).mean() == pytest.approx(m["wa"])
        assert (root / "results" / "plots" / f"{name}_confusion.png").stat().st_size > 1000
        confusion = pd.read_csv(root / "results" / "plots" / f"{name}_confusion.csv", index_col=0)
        assert int(confusion.to_numpy().sum()) == n
        model_dir = root / "models" / name
        assert sorted(p.name for p in model_dir.iterdir()) == [
            "fold_0.pt", "fold_1.pt", "fold_2.pt", "train_summary.json"
        ]  # fmt: skip
    report = pipeline["report"]
    summary = (report / "summary.md").read_text()
    assert "| fusion_mlp |" in summary and "| attention_lstm |" in summary
    table = pd.read_csv(report / "metrics.csv")
    assert list(table["model"]) == list(MODELS)
    assert table.loc[0, "wa"] == pytest.approx(pipeline["metrics"]["fusion_mlp"]["wa"])
    assert (report / "accuracy.png").stat().st_size > 1000


def test_checkpoints_load_with_weights_only(pipeline: dict) -> None:
    ckpt = torch.load(
        pipeline["root"] / "models" / "attention_lstm" / "fold_1.pt", weights_only=True
    )
    meta = ckpt["meta"]
    assert meta["fold"] == 1 and meta["classes"] == ["neutral", "happy", "angry", "sad"]
    assert meta["spec"]["arch"] == "mer2024_attention" and meta["levels"]["video"] == "frame"
    assert 1 <= meta["best_epoch"] <= meta["epochs_run"]
    assert set(ckpt["normaliser"]) == {"audio", "video"}
    assert isinstance(ckpt["normaliser"]["audio"]["mean"], torch.Tensor)
    summary = json.loads(
        (pipeline["root"] / "models" / "attention_lstm" / "train_summary.json").read_text()
    )
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2]
    assert all(f["n_train"] and f["n_val"] and f["n_test"] for f in summary["folds"])


def test_same_params_give_identical_metrics(pipeline: dict) -> None:
    assert pipeline["again"] == pipeline["metrics"]["fusion_mlp"]
    first = pipeline["root"] / "results" / "predictions" / "fusion_mlp.csv"
    second = pipeline["root"] / "again_results" / "predictions" / "fusion_mlp.csv"
    assert first.read_text() == second.read_text()


def _runs(pipeline: dict) -> list[Any]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=pipeline["uri"])
    exp = client.get_experiment_by_name("robustmer-tests")
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_mlflow_parent_and_nested_runs(pipeline: dict, tiny_store: Path) -> None:
    import mlflow

    from robustmer.data.store import FeatureStore

    client = mlflow.MlflowClient(tracking_uri=pipeline["uri"])
    runs = _runs(pipeline)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == sorted([*MODELS, "fusion_mlp"])
    summary = json.loads(
        (pipeline["root"] / "models" / "fusion_mlp" / "train_summary.json").read_text()
    )
    parent = client.get_run(summary["mlflow_run_id"])
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert parent.info.run_name == "fusion_mlp" and parent.info.status == "FINISHED"
    assert tags["robustmer.git_commit"] == git_tags()["robustmer.git_commit"]
    assert tags["robustmer.git_dirty"] in ("true", "false", "unknown")
    assert tags["robustmer.dvc_exp_name"] == "tiny-exp"
    assert tags["robustmer.dataset"] == "builtin"
    store = FeatureStore(tiny_store)
    names = ["audio/egemaps_functionals", "text/minilm", "video/face_hog_mean"]
    assert tags["robustmer.features_hash"] == store.content_hash(names)
    assert params["model.arch"] == "early_fusion"
    assert params["model.features.audio"] == "egemaps_functionals"
    assert params["train.lr"] == "0.003" and params["seed"] == "7"
    assert params["cv.val_speakers"] == "1"
    for key in ("test_wa", "test_ua", "test_weighted_f1", "test_macro_f1", "cv_val_ua"):
        assert key in metrics, key
    assert metrics["test_wa"] == pytest.approx(pipeline["metrics"]["fusion_mlp"]["wa"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "train_summary.json" in artifacts and "evaluation" in artifacts
    evaluation = {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert evaluation >= {"evaluation/fusion_mlp.json", "evaluation/fusion_mlp_confusion.png"}
    # Artifacts sit beside the database, not in the working directory.
    assert parent.info.artifact_uri.startswith((pipeline["root"] / "mlruns").as_uri())

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["fold_0", "fold_1", "fold_2"]
    by_id = {f["mlflow_run_id"]: f for f in summary["folds"]}
    for child in children:
        fold = by_id[child.info.run_id]
        assert child.data.tags["robustmer.fold"] == str(fold["fold"])
        assert child.data.params["n_train"] == str(fold["n_train"])
        history = client.get_metric_history(child.info.run_id, "val_ua")
        assert [m.step for m in history] == list(range(1, fold["epochs_run"] + 1))
        assert child.data.metrics["best_epoch"] == fold["best_epoch"]
        assert "test_ua" in child.data.metrics


def test_evaluate_without_training_run_logs_a_new_run(
    pipeline: dict, tiny_store: Path, tmp_path: Path
) -> None:
    # A summary whose run id is not in this store: evaluation still gets tracked.
    import shutil

    models = tmp_path / "models"
    shutil.copytree(pipeline["root"] / "models" / "fusion_mlp", models / "fusion_mlp")
    summary_path = models / "fusion_mlp" / "train_summary.json"
    summary = json.loads(summary_path.read_text())
    summary["mlflow_run_id"] = "0" * 32
    summary_path.write_text(json.dumps(summary))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
        got = evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r")
    assert got == pipeline["metrics"]["fusion_mlp"]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/other.db")
    exp = client.get_experiment_by_name("robustmer-tests")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "fusion_mlp-evaluate" and "test_ua" in run.data.metrics


def test_corrupt_or_missing_checkpoint_is_a_clear_error(
    pipeline: dict, tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    models = tmp_path / "models"
    shutil.copytree(pipeline["root"] / "models" / "fusion_mlp", models / "fusion_mlp")
    bad = models / "fusion_mlp" / "fold_1.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"fold_1\.pt: checkpoint is corrupt.*robustmer train"):
        evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r")
    bad.unlink()
    with pytest.raises(DataError, match=r"fold_1\.pt: checkpoint not found.*robustmer train"):
        evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r")
    (models / "fusion_mlp" / "train_summary.json").unlink()
    with pytest.raises(DataError, match=r"not trained.*robustmer train fusion_mlp"):
        evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r")


def test_checkpoint_from_other_params_is_refused(
    pipeline: dict, tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    params = json.loads(json.dumps(pipeline["params"]))
    params["models"]["fusion_mlp"]["hidden_dim"] = 64
    with pytest.raises(DataError, match=r"hidden_dim 32 != 64.*robustmer train fusion_mlp"):
        evaluate(params, "fusion_mlp", tiny_store, pipeline["root"] / "models", tmp_path / "r")


def test_report_names_missing_metrics(pipeline: dict, tmp_path: Path) -> None:
    present = pipeline["root"] / "results" / "metrics" / "fusion_mlp.json"
    with pytest.raises(DataError, match=r"ghost\.json.*robustmer evaluate"):
        write_report(pipeline["params"], [present, tmp_path / "ghost.json"], tmp_path / "rep")
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(DataError, match=r"broken\.json: not a robustmer metrics file"):
        write_report(pipeline["params"], [broken], tmp_path / "rep")


def test_tracking_helpers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_run.tracking_uri({"mlflow": {"tracking_uri": "sqlite:///a.db"}}) == (
        "sqlite:///a.db"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    assert mlflow_run.tracking_uri({"mlflow": {"tracking_uri": "sqlite:///a.db"}}) == (
        "http://server:5000"
    )
    assert mlflow_run.flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {
        "a.b": "1", "a.c": "1,2", "d": "x"
    }  # fmt: skip
    location = mlflow_run.sqlite_artifact_location(f"sqlite:///{tmp_path}/m.db", "my exp")
    assert location == (tmp_path / "mlruns" / "my_exp").as_uri()
    assert mlflow_run.sqlite_artifact_location("http://server:5000", "x") is None
    env = {"DVC_EXP_NAME": "e1", "DVC_EXP_BASELINE_REV": "abc"}
    assert dvc_tags(env, cwd=tmp_path) == {
        "robustmer.dvc_exp_name": "e1", "robustmer.dvc_exp_baseline_rev": "abc"
    }  # fmt: skip
    assert git_tags(cwd=tmp_path) == {  # a temporary folder is not inside a git repository
        "robustmer.git_commit": "unknown", "robustmer.git_dirty": "unknown"
    }  # fmt: skip


def test_dirty_flag_ignores_what_the_pipeline_writes() -> None:
    from robustmer.tracking.lineage import changed_inputs

    porcelain = "\n".join(
        [
            " M dvc.lock",
            "?? results/metrics/a.json",
            "?? data/raw/.gitignore",
            "?? mlflow.db",
            " M params.yaml",
            "?? src/robustmer/new.py",
            'R  old.py -> "src/renamed.py"',
        ]
    )
    assert changed_inputs(porcelain) == ["params.yaml", "src/robustmer/new.py", "src/renamed.py"]
    assert changed_inputs(" M dvc.lock\n?? models/m/fold_0.pt") == []
