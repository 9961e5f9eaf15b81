"""train -> corrupt -> evaluate -> report on the tiny store, with MLflow in a temp SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from robustmer.corruption.condition_store import corrupt
from robustmer.errors import DataError
from robustmer.evaluation.report import write_report
from robustmer.evaluation.runner import evaluate_model
from robustmer.paths import SCORE_COLUMNS
from robustmer.tracking import mlflow_run
from robustmer.tracking.lineage import dvc_tags, git_tags
from robustmer.training.runner import train_model

MODELS = ("fusion_mlp", "attention_lstm")
CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_rate": {"kind": "missing_rate", "levels": [0.0, 0.6]},
    "feature_noise": {"kind": "feature_noise", "levels": [100]},
}
SEEDS = [1, 2]


def outputs(results: Path, name: str, condition: str) -> dict[str, Path]:
    from conftest import eval_outputs

    return eval_outputs(results, name, condition)


def evaluate(
    params: dict,
    name: str,
    store: Path,
    models: Path,
    results: Path,
    condition: str = "clean",
    conditions: Path | None = None,
) -> dict:
    """Evaluate one model on one condition (stored under `conditions`, default beside results)."""
    conditions = conditions or results.parent / "conditions"
    return evaluate_model(
        params, name, condition, store, models / name, conditions / condition,
        out=outputs(results, name, condition),
    )  # fmt: skip


def tracked_params() -> dict:
    from conftest import tiny_params_dict

    from robustmer.config import validate_params

    raw = tiny_params_dict(seeds=SEEDS)
    raw["corrupt"] = {"conditions": CONDITIONS}
    return validate_params(raw)


@pytest.fixture(scope="module")
def pipeline(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Train both tiny models (2 seeds), evaluate the grid, then fusion_mlp once more."""
    root = tmp_path_factory.mktemp("pipeline")
    params = tracked_params()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("DVC_EXP_NAME", "tiny-exp")
        mp.delenv("DVC_EXP_BASELINE_REV", raising=False)
        for condition in CONDITIONS:
            corrupt(params, condition, tiny_store, root / "conditions" / condition)
        metrics: dict[str, dict[str, dict]] = {}
        for name in MODELS:
            train_model(params, name, tiny_store, root / "models" / name)
            metrics[name] = {
                c: evaluate(params, name, tiny_store, root / "models", root / "results", c)
                for c in CONDITIONS
            }
        report = write_report(
            params,
            [outputs(root / "results", m, c)["scores"] for m in MODELS for c in CONDITIONS],
            root / "report",
            robustness_json=root / "robustness.json",
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
        m = pipeline["metrics"][name]["clean"]
        out = outputs(root / "results", name, "clean")
        assert json.loads(out["metrics"].read_text()) == json.loads(json.dumps(m))
        assert m["seeds"] == SEEDS and m["n_folds"] == 3
        clean = m["levels"]["clean"]
        for key in ("wa", "ua", "weighted_f1", "macro_f1"):
            assert 0.0 <= clean[key] <= 1.0
            assert {f"{key}_std", f"{key}_fold_mean", f"{key}_fold_std"} <= set(clean)
        assert clean["ua"] > 0.6, m  # chance is 0.25
        preds = pd.read_csv(out["predictions"])
        assert list(preds.columns[:5]) == ["level", "seed", "sample_id", "speaker", "fold"]
        assert [c for c in preds.columns if c.startswith("prob_")] == [
            "prob_neutral", "prob_happy", "prob_angry", "prob_sad"
        ]  # fmt: skip
        assert len(preds) == n * len(SEEDS)
        assert (preds.groupby("seed")["sample_id"].nunique() == n).all()
        wa = (preds["actual"] == preds["predicted"]).groupby(preds["seed"]).mean().mean()
        assert wa == pytest.approx(clean["wa"])
        assert out["confusion_png"].stat().st_size > 1000
        confusion = pd.read_csv(out["confusion_csv"], index_col=0)
        assert int(confusion.to_numpy().sum()) == n
        model_dir = root / "models" / name
        assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*.*")) == [
            *(f"seed_{s}/fold_{k}.pt" for s in SEEDS for k in range(3)), "train_summary.json"
        ]  # fmt: skip
        scores = pd.read_csv(out["scores"], dtype={"fold": str, "level": str})
        assert list(scores.columns) == [
            "model", "condition", "level", "level_value", "fold", "seed", "metric", "value"
        ]  # fmt: skip
        assert set(scores["fold"]) == {"0", "1", "2", "all"} and set(scores["seed"]) == set(SEEDS)


def test_accuracy_falls_with_missing_rate_and_noise(pipeline: dict) -> None:
    for name in MODELS:
        m = pipeline["metrics"][name]
        clean = m["clean"]["levels"]["clean"]["ua"]
        assert m["missing_rate"]["levels"]["0"]["ua"] == pytest.approx(clean)
        assert m["missing_rate"]["levels"]["0.6"]["ua"] < clean - 0.05
        assert m["feature_noise"]["levels"]["100"]["ua"] < clean - 0.05


def test_report_tables_and_curves(pipeline: dict) -> None:
    report = pipeline["report"]
    summary = (report / "summary.md").read_text()
    assert "| fusion_mlp |" in summary and "| attention_lstm |" in summary
    assert "## missing_rate" in summary and "## feature_noise" in summary
    results = pd.read_csv(report / "results.csv", dtype={"fold": str, "level": str})
    assert set(results["model"]) == set(MODELS) and set(results["condition"]) == set(CONDITIONS)
    table = pd.read_csv(report / "summary.csv", dtype={"level": str})
    row = table[(table["model"] == "fusion_mlp") & (table["condition"] == "clean")
                & (table["metric"] == "ua")].iloc[0]  # fmt: skip
    assert row["pooled_mean"] == pytest.approx(
        pipeline["metrics"]["fusion_mlp"]["clean"]["levels"]["clean"]["ua"]
    )
    assert row["n"] == 3 * len(SEEDS)
    for condition in CONDITIONS:
        assert (report / "curves" / f"{condition}.png").stat().st_size > 1000
        curve = pd.read_csv(report / "curves" / f"{condition}.csv")
        assert set(curve["model"]) == set(MODELS) and "ua" in curve.columns
    assert (report / "overview.png").stat().st_size > 1000


def test_checkpoints_load_with_weights_only(pipeline: dict) -> None:
    ckpt = torch.load(
        pipeline["root"] / "models" / "attention_lstm" / "seed_2" / "fold_1.pt", weights_only=True
    )
    meta = ckpt["meta"]
    assert (
        meta["fold"] == 1
        and meta["train_seed"] == 2
        and meta["classes"] == ["neutral", "happy", "angry", "sad"]
    )
    assert meta["spec"]["arch"] == "mer2024_attention" and meta["levels"]["video"] == "frame"
    assert 1 <= meta["best_epoch"] <= meta["epochs_run"]
    assert set(ckpt["normaliser"]) == {"audio", "video"}
    assert isinstance(ckpt["normaliser"]["audio"]["mean"], torch.Tensor)
    summary = json.loads(
        (pipeline["root"] / "models" / "attention_lstm" / "train_summary.json").read_text()
    )
    assert [(f["train_seed"], f["fold"]) for f in summary["folds"]] == [
        (s, k) for s in SEEDS for k in range(3)
    ]
    assert all(f["n_train"] and f["n_val"] and f["n_test"] for f in summary["folds"])


def test_same_params_give_identical_metrics(pipeline: dict) -> None:
    assert pipeline["again"] == pipeline["metrics"]["fusion_mlp"]["clean"]
    first = pipeline["root"] / "results" / "predictions" / "clean" / "fusion_mlp.csv"
    second = pipeline["root"] / "again_results" / "predictions" / "clean" / "fusion_mlp.csv"
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
    assert sorted(r.info.run_name for r in parents) == sorted([*MODELS, "fusion_mlp", "report"])
    (report,) = [r for r in parents if r.info.run_name == "report"]
    logged = {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert {"report/summary.md", "report/results.csv", "report/missing_rate.png"} <= logged
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
    # Evaluation logs into the training run but leaves its stage tag (the audit reads it).
    assert tags["robustmer.stage"] == "train" and tags["robustmer.evaluated"] == "true"
    store = FeatureStore(tiny_store)
    names = ["audio/egemaps_functionals", "text/minilm", "video/face_hog_mean"]
    assert tags["robustmer.features_hash"] == store.content_hash(names)
    assert params["model.arch"] == "early_fusion"
    assert params["model.features.audio"] == "egemaps_functionals"
    assert params["train.lr"] == "0.003" and params["seed"] == "7"
    assert params["cv.val_speakers"] == "1"
    for key in ("eval/clean/clean/ua", "eval/missing_rate/0.6/ua", "cv_val_ua"):
        assert key in metrics, key
    clean = pipeline["metrics"]["fusion_mlp"]["clean"]["levels"]["clean"]
    assert metrics["eval/clean/clean/wa"] == pytest.approx(clean["wa"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "train_summary.json" in artifacts and "evaluation" in artifacts
    evaluation = {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation/clean")}
    assert evaluation >= {
        "evaluation/clean/clean.json",
        "evaluation/clean/fusion_mlp_confusion.png",
    }
    # Artifacts sit beside the database, not in the working directory.
    assert parent.info.artifact_uri.startswith((pipeline["root"] / "mlruns").as_uri())

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [
        f"seed_{s}_fold_{k}" for s in SEEDS for k in range(3)
    ]
    by_id = {f["mlflow_run_id"]: f for f in summary["folds"]}
    for child in children:
        fold = by_id[child.info.run_id]
        assert child.data.tags["robustmer.fold"] == str(fold["fold"])
        assert child.data.tags["robustmer.train_seed"] == str(fold["train_seed"])
        assert child.data.params["n_train"] == str(fold["n_train"])
        history = client.get_metric_history(child.info.run_id, "val_ua")
        assert [m.step for m in history] == list(range(1, fold["epochs_run"] + 1))
        assert child.data.metrics["best_epoch"] == fold["best_epoch"]


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
        got = evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r",
                       conditions=pipeline["root"] / "conditions")  # fmt: skip
    assert got == pipeline["metrics"]["fusion_mlp"]["clean"]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/other.db")
    exp = client.get_experiment_by_name("robustmer-tests")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "fusion_mlp-evaluate"
    assert "eval/clean/clean/ua" in run.data.metrics


def test_corrupt_or_missing_checkpoint_is_a_clear_error(
    pipeline: dict, tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    models = tmp_path / "models"
    shutil.copytree(pipeline["root"] / "models" / "fusion_mlp", models / "fusion_mlp")
    bad = models / "fusion_mlp" / "seed_2" / "fold_1.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"fold_1\.pt: checkpoint is corrupt.*robustmer train"):
        evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r",
                 conditions=pipeline["root"] / "conditions")  # fmt: skip
    bad.unlink()
    with pytest.raises(DataError, match=r"fold_1\.pt: checkpoint not found.*robustmer train"):
        evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r",
                 conditions=pipeline["root"] / "conditions")  # fmt: skip
    (models / "fusion_mlp" / "train_summary.json").unlink()
    with pytest.raises(DataError, match=r"not trained.*robustmer train fusion_mlp"):
        evaluate(pipeline["params"], "fusion_mlp", tiny_store, models, tmp_path / "r",
                 conditions=pipeline["root"] / "conditions")  # fmt: skip


def test_checkpoint_from_other_params_is_refused(
    pipeline: dict, tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    params = json.loads(json.dumps(pipeline["params"]))
    params["models"]["fusion_mlp"]["hidden_dim"] = 64
    with pytest.raises(DataError, match=r"hidden_dim 32 != 64.*robustmer train fusion_mlp"):
        evaluate(params, "fusion_mlp", tiny_store, pipeline["root"] / "models", tmp_path / "r",
                 conditions=pipeline["root"] / "conditions")  # fmt: skip


def test_report_names_missing_scores(
    pipeline: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db"
    )  # not the fixture's
    present = outputs(pipeline["root"] / "results", "fusion_mlp", "clean")["scores"]
    ghost = tmp_path / "ghost_model" / "clean.csv"
    # What exists is reported; the missing cell is listed with its fix.
    write_report(pipeline["params"], [present, ghost], tmp_path / "rep")
    text = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Cells without scores" in text
    assert "| ghost_model | clean | not evaluated" in text  # model, conditions, why
    assert "robustmer evaluate ghost_model clean" in text
    with pytest.raises(DataError, match=r"no scores to report.*ghost_model"):
        write_report(pipeline["params"], [ghost], tmp_path / "rep2")
    broken = tmp_path / "m" / "broken.csv"
    broken.parent.mkdir()
    broken.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"broken\.csv: not a robustmer scores file"):
        write_report(pipeline["params"], [broken], tmp_path / "rep")


def test_condition_from_another_store_is_refused(
    pipeline: dict, store_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    other = store_factory(seed=3, per_speaker=12)
    with pytest.raises(DataError, match=r"another feature store.*robustmer corrupt clean"):
        evaluate(pipeline["params"], "fusion_mlp", other, pipeline["root"] / "models",
                 pipeline["root"] / "results")  # fmt: skip


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


def test_models_see_identical_conditions(pipeline: dict) -> None:
    """Both models read the same stored masks: the present columns of their predictions match."""
    results = pipeline["root"] / "results"
    cols = ["level", "seed", "sample_id", "present_audio", "present_video", "present_text"]
    a, b = (pd.read_csv(outputs(results, m, "missing_rate")["predictions"])[cols] for m in MODELS)
    pd.testing.assert_frame_equal(a, b)
    high = a[a["level"] == 0.6]
    assert 0.5 < 1 - high[cols[3:]].to_numpy().mean() < 0.7


@pytest.mark.parametrize(
    ("dataset", "phrase"),
    [
        ("meld", "official train / validation / test split"),
        ("emodb", "speaker-independent cross-validation"),
        ("iemocap", "published fold table"),
    ],
)
def test_summary_names_its_number_and_the_dataset_protocol(dataset: str, phrase: str) -> None:
    from robustmer.evaluation.report import markdown_summary, summary_table

    rows = [("m", "clean", "clean", 0.0, fold, 1, "ua", value)
            for fold, value in (("0", 0.5), ("1", 0.7), ("all", 0.62))]  # fmt: skip
    summary = summary_table(pd.DataFrame(rows, columns=list(SCORE_COLUMNS)))
    params = {"dataset": dataset, "train": {"seeds": [1]},
              "corrupt": {"conditions": {"clean": {"kind": "clean"}}}}  # fmt: skip
    text = markdown_summary(summary, params, {"classification": ["ua"]})
    assert phrase in text and "fold mean ± std" in text and "`pooled_mean`" in text
    assert "60.0 ± 10.0" in text  # the fold mean, as the heading says (the pooled is 62)


def test_report_gives_robustness_as_one_number(pipeline: dict) -> None:
    """missing_rate (0.0, 0.6) has a curve; feature_noise has one level, clean none."""
    import mlflow

    from robustmer.evaluation.robustness import relative_robustness

    robust = pd.read_csv(pipeline["root"] / "report" / "robustness.csv")
    assert set(robust["condition"]) == {"missing_rate"} and set(robust["model"]) == set(MODELS)
    summary = pd.read_csv(pipeline["root"] / "report" / "summary.csv", dtype={"level": str})
    cells = summary[(summary["condition"] == "missing_rate") & (summary["metric"] == "ua")]
    for model in MODELS:
        curve = cells[cells["model"] == model]["mean"].to_list()
        row = robust[robust["model"] == model].iloc[0]
        assert row["relative"] == pytest.approx(relative_robustness(curve))
    fusion = robust.set_index("model").loc["fusion_mlp"]
    assert fusion["effective"] == pytest.approx(0.0)  # the reference against itself
    metric = json.loads((pipeline["root"] / "robustness.json").read_text())
    assert set(metric) == {"missing_rate"} and set(metric["missing_rate"]) == set(MODELS)
    text = (pipeline["root"] / "report" / "summary.md").read_text()
    assert "## Robustness as one number" in text
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{pipeline['root']}/mlflow.db")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.`robustmer.stage` = 'report'",
    )
    logged = runs[0].data.metrics
    assert logged["robustness/missing_rate/fusion_mlp/relative"] == pytest.approx(
        metric["missing_rate"]["fusion_mlp"]["relative"]
    )
