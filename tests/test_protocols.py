"""Evaluation protocols as presets (`protocol: {<dataset>: <name>}`): the MER2024 protocol fixes
5-fold CV, WAF selection and ranking and the MERTools training regime on its dataset only; the
report ranks the models by the protocol's metric, with the official test score beside."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import eval_outputs
from dataset_fixtures_packs import build_mertools_layout
from test_official_test import write_test_csv

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.errors import ConfigError
from robustmer.evaluation.report import write_report
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.io import read_json
from robustmer.training.runner import train_model

ROOT = Path(__file__).resolve().parents[1]


def two_datasets(**protocol: str) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"] = ["builtin", "mer2024"]
    raw["acquire"]["mer2024"] = {"path": "/data/mer2024"}
    raw["protocol"] = protocol
    return raw


def test_the_protocol_applies_on_its_dataset_only(caplog: pytest.LogCaptureFixture) -> None:
    raw = two_datasets(mer2024="mer2024")
    with caplog.at_level(logging.INFO, logger="robustmer.config"):
        mer = validate_params(copy.deepcopy(raw), dataset="mer2024")
    assert mer["train"]["selection_metric"] == "weighted_f1"
    assert mer["train"]["epochs"] == 100 and mer["train"]["batch_size"] == 32
    assert mer["report"]["metrics"][0] == "weighted_f1"
    assert mer["acquire"]["mer2024"]["n_folds"] == 5
    assert mer["acquire"]["mer2024"]["path"] == "/data/mer2024"  # the user's keys stay
    assert "train.selection_metric" in caplog.text and "params.yaml's values" in caplog.text
    builtin = validate_params(copy.deepcopy(raw), dataset="builtin")
    assert builtin["train"]["selection_metric"] == "ua" and builtin["train"]["epochs"] == 60
    # A model's own train keys still win over the protocol's section (VAT's preset here).
    assert mer["models"]["vat"]["train"]["epochs"] == 30


@pytest.mark.parametrize(("protocol", "message"), [
    ({"mer2024": "mer2025"}, r"unknown protocol 'mer2025' \(known: mer2024\)"),
    ({"emodb": "mer2024"}, r"protocol\.emodb: not one of the project's datasets"),
    ({"builtin": "mer2024"}, r"protocol 'mer2024' fits mer2024, mer2023, not 'builtin'"),
])  # fmt: skip
def test_bad_protocols_are_refused_by_name(protocol: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_params(two_datasets(**protocol), dataset="builtin")


def test_mer2024_ranks_by_waf_with_the_official_test_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mer = build_mertools_layout(tmp_path / "pack", n_labelled=30, n_unlabelled=6)
    write_test_csv(mer.root)
    models = {
        "fusion": {"arch": "early_fusion",
                   "features": {"audio": "eGeMAPS_UTT", "video": "manet_frame"},
                   "train": {"epochs": 3}},
        "audio": {"arch": "early_fusion", "features": {"audio": "eGeMAPS_UTT"},
                  "train": {"epochs": 3}},
    }  # fmt: skip
    params = validate_params(
        {
            "seed": 3,
            "datasets": ["mer2024"],
            "protocol": {"mer2024": "mer2024"},
            "device": "cpu",
            "acquire": {"mer2024": {"path": str(mer.root), "test": "test.csv", "n_folds": 3}},
            "train": {"seeds": [1], "num_threads": 1},
            "models": models,
            "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
            "mlflow": {"experiment": "robustmer-tests"},
        }
    )
    assert params["acquire"]["mer2024"]["n_folds"] == 5  # the protocol's, not the 3 above
    store = tmp_path / "features"
    acquire(params, tmp_path / "raw")
    extract(params, tmp_path / "raw", store)
    corrupt(params, "clean", store, tmp_path / "clean")
    scores, waf = [], {}
    for name in models:
        train_model(params, name, store, tmp_path / name)
        summary = read_json(tmp_path / name / "train_summary.json")
        assert summary["selection_metric"] == "weighted_f1" and len(summary["folds"]) == 5
        out = eval_outputs(tmp_path / "results", name, "clean")
        metrics = evaluate_model(params, name, "clean", store, tmp_path / name,
                                 tmp_path / "clean", out)  # fmt: skip
        scores.append(out["scores"])
        waf[name] = metrics["levels"]["clean"]
    report = write_report(params, scores, tmp_path / "report")
    text = (report / "summary.md").read_text()
    ranking = text.split("## Ranking (clean, WF1)")[1].split("\n## ")[0]
    assert "| rank | model | fold mean ± std | official test |" in ranking
    summary = pd.read_csv(report / "summary.csv")
    clean = summary[(summary["metric"] == "weighted_f1") & (summary["condition"] == "clean")]
    best_first = clean.sort_values("mean", ascending=False)["model"].tolist()
    rows = [line.split("|")[2].strip() for line in ranking.splitlines() if line.startswith("| ")]
    assert rows[1:] == best_first  # rows[0] is the header
    assert text.index("## Ranking") < text.index("## clean")
