"""`robustmer lineage`: a run, a model and a result traced to their inputs, and broken links found.

One tiny project is laid out as robustmer.paths lays it out (store with a raw corpus, condition,
model, scores, report; a git repository; MLflow in a SQLite file beside it) and trained and
evaluated in-process with relative paths, as the CLI does. Tests that break something work on a
copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from robustmer import paths
from robustmer.corruption.condition_store import corrupt
from robustmer.data.store import FeatureStore
from robustmer.evaluation.report import write_report
from robustmer.evaluation.runner import evaluate_model
from robustmer.io import read_json, sha256_file, write_json
from robustmer.tracking import audit
from robustmer.tracking.audit import ALTERED, MISSING, OK, STALE, Lineage, trace
from robustmer.training.runner import train_model

MODEL = "fusion_mlp"
DATASET = "builtin"
CONDITIONS = {"clean": {"kind": "clean"}, "missing_rate": {"kind": "missing_rate", "levels": [0.5]}}
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]


def _params() -> dict[str, Any]:
    from conftest import tiny_params_dict

    from robustmer.config import validate_params

    raw = tiny_params_dict(seeds=[1], epochs=3, patience=0)
    raw["corrupt"] = {"conditions": CONDITIONS}
    return validate_params(raw)


def _add_raw_corpus(root: Path) -> None:
    """A raw corpus with media checksums, recorded in store.json as `extract` records it."""
    raw = root / paths.raw_dir(DATASET)
    (raw / "media").mkdir(parents=True)
    hashes = {}
    for i in range(3):
        media = raw / "media" / f"utt{i}.wav"
        media.write_bytes(bytes([i]) * 256)
        hashes[f"media/utt{i}.wav"] = sha256_file(media)
    corpus = {"dataset": DATASET, "generator": "test", "version": "1", "sha256": hashes}
    write_json(raw / "corpus.json", corpus)
    store_json = root / paths.feature_dir(DATASET) / "store.json"
    info = read_json(store_json)
    info["raw_corpus"] = {"path": paths.raw_dir(DATASET).as_posix(), "info": corpus}
    write_json(store_json, info)


def _build(root: Path, params: dict[str, Any]) -> None:
    store, model = paths.feature_dir(DATASET), paths.model_dir(DATASET, MODEL)
    for condition in CONDITIONS:
        corrupt(params, condition, store, paths.corrupted_dir(DATASET, condition))
    train_model(params, MODEL, store, model)
    for condition in CONDITIONS:
        out = {
            "metrics": paths.metrics_file(DATASET, MODEL, condition),
            "scores": paths.scores_file(DATASET, MODEL, condition),
            "predictions": paths.predictions_file(DATASET, MODEL, condition),
            "confusion_png": paths.confusion_png(DATASET, MODEL, condition),
            "confusion_csv": paths.confusion_csv(DATASET, MODEL, condition),
        }
        evaluate_model(
            params, MODEL, condition, store, model, paths.corrupted_dir(DATASET, condition), out
        )
    scores = [paths.scores_file(DATASET, MODEL, c) for c in CONDITIONS]
    write_report(params, scores, paths.report_dir(DATASET))


@pytest.fixture(scope="module")
def project(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("lineage")
    root = base / "project"
    shutil.copytree(tiny_store, root / paths.feature_dir(DATASET))
    _add_raw_corpus(root)
    (root / "README.md").write_text("tiny project\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*GIT, "add", "README.md"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "init"], cwd=root, check=True)
    params = _params()
    uri = f"sqlite:///{base}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("DVC_EXP_NAME", "lineage-exp")
        with pytest.MonkeyPatch.context() as cwd:
            cwd.chdir(root)
            _build(root, params)
        summary = read_json(root / paths.model_dir(DATASET, MODEL) / "train_summary.json")
        yield {"root": root, "params": params, "uri": uri, "summary": summary, "base": base}


def _copy(project: dict, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(project["root"], dst)
    return dst


def _by_kind(result: Lineage, kind: str) -> list[audit.Link]:
    return [link for link in result.links if link.kind == kind]


def _statuses(result: Lineage) -> dict[str, str]:
    return {f"{link.kind}:{link.name}": link.status for link in result.links}


def test_training_records_checkpoint_hashes_and_the_dvc_side(project: dict) -> None:
    root, summary = project["root"], project["summary"]
    assert paths.SUMMARY_FILES == {
        "train": paths.SUMMARY_FILE, "pretrain": paths.PRETRAIN_SUMMARY
    }  # fmt: skip
    for fold in summary["folds"]:
        path = root / paths.model_dir(DATASET, MODEL) / fold["checkpoint"]
        assert fold["checkpoint_sha256"] == sha256_file(path)
    record = read_json(paths.run_record_path(root / paths.model_dir(DATASET, MODEL)))
    assert record["mlflow_run_id"] == summary["mlflow_run_id"]
    assert record["mlflow_experiment_id"] == summary["mlflow_experiment_id"]
    assert 0.0 <= record["cv_val_ua"] <= 1.0
    dvc_yaml = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())
    assert f"{paths.MODELS.as_posix()}/{paths.RUN_RECORDS}" in dvc_yaml["metrics"]


def test_run_id_traces_to_commit_params_store_and_checkpoints(project: dict) -> None:
    root, summary = project["root"], project["summary"]
    result = trace(summary["mlflow_run_id"], root)
    assert result.ok, result.to_text()
    (git,) = _by_kind(result, "git_commit")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    assert git.recorded == head.stdout.strip() and git.info["dirty"] == "false"
    (params,) = _by_kind(result, "params")
    assert params.recorded["model.arch"] == "early_fusion" and params.recorded["seed"] == "7"
    (store,) = _by_kind(result, "feature_store")
    features = ["audio/egemaps_functionals", "text/minilm", "video/face_hog_mean"]
    assert store.path == "data/features/builtin"
    assert store.recorded == FeatureStore(root / store.path).content_hash(features)
    assert sorted(link.name for link in _by_kind(result, "feature")) == features
    assert _by_kind(result, "feature")[0].info["version"] == "test"
    assert [link.status for link in _by_kind(result, "checkpoint")] == [OK] * 3
    assert {link.recorded for link in _by_kind(result, "checkpoint")} == {
        f["checkpoint_sha256"] for f in summary["folds"]
    }
    (exp,) = _by_kind(result, "dvc_experiment")
    assert exp.recorded["name"] == "lineage-exp"
    assert {"corpus", "media", "manifest", "train_summary", "dvc_run_record"} <= {
        link.kind for link in result.links
    }
    payload = json.loads(json.dumps(result.to_json(), default=str))
    assert payload["ok"] is True and payload["target"]["kind"] == "mlflow_run"
    assert set(payload["links"][0]) >= {"kind", "path", "recorded", "actual", "status"}

    fold_run = summary["folds"][1]["mlflow_run_id"]
    (only,) = _by_kind(trace(fold_run, root), "checkpoint")
    assert only.name == "seed 1 fold 1" and only.status == OK


def test_model_file_and_results_rows(project: dict) -> None:
    root = project["root"]
    checkpoint = (paths.model_dir(DATASET, MODEL) / "seed_1" / "fold_2.pt").as_posix()
    result = trace(checkpoint, root)
    assert result.ok and result.target["kind"] == "checkpoint"
    assert [link.path for link in _by_kind(result, "checkpoint")] == [f"{checkpoint}"]
    assert trace(paths.model_dir(DATASET, MODEL).as_posix(), root).ok

    table = root / paths.report_dir(DATASET) / "results.csv"
    import pandas as pd

    rows = pd.read_csv(table, dtype={"level": str, "fold": str})
    index = int(rows.index[(rows["condition"] == "missing_rate") & (rows["fold"] == "0")][0])
    row = trace(f"{paths.report_dir(DATASET).as_posix()}/results.csv:{index}", root)
    assert row.ok, row.to_text()
    (condition,) = _by_kind(row, "condition")
    assert condition.info["seed"] == 7 and condition.info["levels"] == ["0.5"]
    assert [link.name for link in _by_kind(row, "checkpoint")] == ["seed 1 fold 0"]
    assert _by_kind(row, "evaluation")[0].status == OK
    assert _by_kind(row, "result_row")[0].status == OK
    keys = "model=fusion_mlp,condition=missing_rate,level=0.5,fold=all,seed=1"
    picked = trace(f"{paths.report_dir(DATASET).as_posix()}/results.csv:{keys}", root)
    assert picked.ok and len(_by_kind(picked, "checkpoint")) == 3
    (evaluation,) = _by_kind(picked, "evaluation")
    assert sorted(evaluation.recorded) == ["0.5/macro_f1", "0.5/ua", "0.5/wa", "0.5/weighted_f1"]
    scores = trace(paths.scores_file(DATASET, MODEL, "clean").as_posix(), root)
    assert scores.ok and len(_by_kind(scores, "checkpoint")) == 3


def test_altered_feature_fails_the_cli_with_exit_3(project: dict, tmp_path: Path) -> None:
    root = _copy(project, tmp_path)
    values = root / paths.feature_dir(DATASET) / "features" / "text" / "minilm.values.npy"
    with open(values, "r+b") as fh:  # a few bytes of the data, not the header
        fh.seek(-16, os.SEEK_END)
        fh.write(b"\x00" * 16)
    env = {**os.environ, "MLFLOW_TRACKING_URI": project["uri"]}
    cmd = [sys.executable, "-m", "robustmer.cli", "lineage"]
    run_id = project["summary"]["mlflow_run_id"]
    done = subprocess.run(
        [*cmd, run_id, "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 3, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["target"]["run_id"] == run_id
    broken = {(x["kind"], x["name"]): x for x in report["links"] if x["status"] != OK}
    assert set(broken) == {("feature", "text/minilm")}
    link = broken[("feature", "text/minilm")]
    assert link["status"] == ALTERED and link["recorded"] != link["actual"]
    assert link["path"] == "data/features/builtin/features/text/minilm.values.npy"

    shown = subprocess.run(
        [*cmd, "models/builtin/fusion_mlp"],
        cwd=project["root"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-2000:]
    assert "every link checks out" in shown.stdout


def test_missing_checkpoint_changed_media_and_rebuilt_store(project: dict, tmp_path: Path) -> None:
    from conftest import build_synthetic_store

    root = _copy(project, tmp_path)
    model = root / paths.model_dir(DATASET, MODEL)
    (model / "seed_1" / "fold_0.pt").unlink()
    (root / paths.raw_dir(DATASET) / "media" / "utt1.wav").write_bytes(b"changed")
    result = trace(paths.model_dir(DATASET, MODEL).as_posix(), root)
    statuses = _statuses(result)
    assert statuses["checkpoint:seed 1 fold 0"] == MISSING
    assert statuses["checkpoint:seed 1 fold 1"] == OK
    (media,) = _by_kind(result, "media")
    assert media.status == ALTERED and media.info["problems"] == [
        {"path": "data/raw/builtin/media/utt1.wav", "status": ALTERED}
    ]
    model_dir = paths.model_dir(DATASET, MODEL).as_posix()
    (sampled,) = _by_kind(trace(model_dir, root, media_sample=1), "media")
    (deep,) = _by_kind(trace(model_dir, root, media_sample=1, deep=True), "media")
    assert (sampled.name, deep.name) == ("1 of 3 files", "3 of 3 files")

    shutil.rmtree(root / paths.feature_dir(DATASET))
    build_synthetic_store(root / paths.feature_dir(DATASET), seed=5)
    row = trace(f"{paths.scores_file(DATASET, MODEL, 'clean').as_posix()}:0", root)
    kinds = {link.kind: link.status for link in row.links}
    assert kinds["feature_store"] == STALE and kinds["condition"] == STALE
    # The new store is consistent, just not the one trained on; it records no raw corpus.
    assert {link.status for link in _by_kind(row, "feature")} == {OK}
    assert kinds["corpus"] == MISSING
    assert not row.ok


def test_unknown_target_is_a_clear_error(project: dict) -> None:
    from robustmer.errors import DataError

    with pytest.raises(DataError, match="not an MLflow run id"):
        trace("no-such-thing", project["root"])
    with pytest.raises(DataError, match=r"MLflow run 0{32} not found"):
        trace("0" * 32, project["root"])
