"""A dataset without some modality: models and conditions that need it are skipped, not failed.

EmoDB has audio only; the default grid fuses audio, video and text. Every stage must finish:
train/pretrain write a skip record, corrupt records a skipped raw condition, evaluate writes
empty scores with the reason, and the report shows what ran and lists the rest with why.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import build_synthetic_store, eval_outputs, tiny_params_dict

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.errors import DataError
from robustmer.evaluation.report import write_report
from robustmer.evaluation.runner import evaluate_model
from robustmer.io import read_json
from robustmer.training.runner import pretrain_model, train_model

CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_rate": {"kind": "missing_rate", "levels": [0.0, 0.5]},
    "video_blur": {"kind": "video_blur", "levels": [1, 4]},
    "missing_pattern": {"kind": "missing_pattern"},
}


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("audio-only")
    store = build_synthetic_store(
        root / "store", features={"audio/egemaps_functionals": ("utterance", 8, 1.0)}
    )
    raw = tiny_params_dict(epochs=6)
    fusion = raw["models"]["fusion_mlp"]
    raw["models"] = {
        "audio_mlp": {**fusion, "features": {"audio": "egemaps_functionals"}},
        "fusion_mlp": fusion,
        "nmer": {"arch": "nmer", "preset": "builtin_cpu"},
    }
    raw["corrupt"] = {"conditions": CONDITIONS}
    params = validate_params(raw)
    results = root / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for c in CONDITIONS:
            corrupt(params, c, store, root / "c" / c)
        for m in params["models"]:
            pretrain_model(params, m, store, root / f"{m}.pretrain")
            train_model(params, m, store, root / m, pretrain_dir=root / f"{m}.pretrain")
            for c in CONDITIONS:
                evaluate_model(params, m, c, store, root / m, root / "c" / c,
                               eval_outputs(results, m, c))  # fmt: skip
        scores = [
            eval_outputs(results, m, c)["scores"] for m in params["models"] for c in CONDITIONS
        ]
        write_report(params, scores, root / "report")
    return {"root": root, "results": results, "params": params}


def test_models_needing_an_absent_modality_are_skipped_with_the_reason(audio_only: dict) -> None:
    root = audio_only["root"]
    for model in ("fusion_mlp", "nmer"):
        summary = read_json(root / model / "train_summary.json")
        assert "has no video or text features" in summary["skipped"], summary
        assert f"model {model} needs video/" in summary["skipped"]
        assert not list((root / model).glob("seed_*"))
    assert (
        "has no video or text"
        in read_json(root / "nmer.pretrain" / "pretrain_summary.json")["skipped"]
    )
    trained = read_json(root / "audio_mlp" / "train_summary.json")
    assert "skipped" not in trained and len(trained["folds"]) == 3


def test_a_raw_condition_on_an_absent_modality_is_skipped(audio_only: dict) -> None:
    info = read_json(audio_only["root"] / "c" / "video_blur" / "condition.json")
    assert "has no video features" in info["skipped"] and info["raw_modalities"] == []
    metrics = read_json(eval_outputs(audio_only["results"], "audio_mlp", "video_blur")["metrics"])
    assert metrics["levels"] == {} and "corrupts video" in metrics["skipped"]


def test_missing_modalities_are_drawn_over_the_dataset_s_own(audio_only: dict) -> None:
    root = audio_only["root"]
    pattern = read_json(root / "c" / "missing_pattern" / "condition.json")
    assert "has audio only" in pattern["skipped"]
    rate = read_json(root / "c" / "missing_rate" / "condition.json")
    assert "always keeps one, so nothing could go missing" in rate["skipped"]


def test_the_report_shows_what_ran_and_lists_the_rest(audio_only: dict) -> None:
    report = audio_only["root"] / "report"
    results = pd.read_csv(report / "results.csv")
    assert set(results["model"]) == {"audio_mlp"}
    assert set(results["condition"]) == {"clean"}
    text = (report / "summary.md").read_text()
    listed = text.split("## Cells without scores")[1]
    assert "| audio_mlp | video_blur | skipped: dataset synthetic has no video" in listed
    assert "| audio_mlp | missing_rate | skipped: dataset synthetic has audio only" in listed
    assert "| audio_mlp | missing_pattern | skipped: dataset synthetic has audio only" in listed
    for model in ("fusion_mlp", "nmer"):  # one row per model and reason
        assert f"| {model} | clean, missing_rate, video_blur, missing_pattern | skipped: " in listed
    assert listed.count("| skipped: ") == 5


def test_a_typo_in_a_feature_name_is_still_an_error(audio_only: dict, tmp_path: Path) -> None:
    raw = tiny_params_dict()
    raw["models"] = {"m": {"arch": "early_fusion", "features": {"audio": "egemaps_functional"}}}
    store = audio_only["root"] / "store"
    with pytest.raises(DataError, match=r"model 'm' reads audio/egemaps_functional, which the "
                       r"store lacks \(it holds audio/egemaps_functionals\)"):  # fmt: skip
        train_model(validate_params(raw), "m", store, tmp_path / "m")


def test_lineage_of_a_skipped_model_says_why(audio_only: dict) -> None:
    from robustmer.tracking.audit import trace

    root = audio_only["root"]
    with pytest.raises(DataError, match=r"fusion_mlp was skipped, not trained.*has no video"):
        trace(str(root / "fusion_mlp"), root, params={})
