"""NMER through the pipeline functions: pretrain -> train -> evaluate on the tiny store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from robustmer.config import ModelSpec, TrainConfig, validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.errors import DataError
from robustmer.evaluation.runner import evaluate_model
from robustmer.training.runner import pretrain_model, train_model

CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_pattern": {"kind": "missing_pattern"},
}


def nmer_params() -> dict:
    from conftest import tiny_params_dict

    raw = tiny_params_dict()
    raw["models"]["nmer"] = {
        "arch": "nmer",
        "preset": "builtin_cpu",
        "features": {"audio": "egemaps_functionals", "video": "face_hog", "text": "minilm"},
        "hidden_dim": 32,
        "pretrain": {"epochs": 12, "decay_epochs": 4, "batch_size": 16, "lr": 0.003},
        "train": {"epochs": 12, "decay_epochs": 4, "batch_size": 16, "lr": 0.002},
    }
    raw["corrupt"] = {"conditions": CONDITIONS}
    return validate_params(raw)


def outputs(root: Path, condition: str) -> dict[str, Path]:
    from conftest import eval_outputs

    return eval_outputs(root, "nmer", condition)


@pytest.fixture(scope="module")
def nmer_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("nmer")
    params = nmer_params()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for c in CONDITIONS:
            corrupt(params, c, tiny_store, root / "conditions" / c)
        pretrain_model(params, "nmer", tiny_store, root / "nmer.pretrain")
        train_model(params, "nmer", tiny_store, root / "nmer", pretrain_dir=root / "nmer.pretrain")
        metrics = {
            c: evaluate_model(params, "nmer", c, tiny_store, root / "nmer",
                              root / "conditions" / c, outputs(root / "eval", c))
            for c in CONDITIONS
        }  # fmt: skip
        again = evaluate_model(params, "nmer", "missing_pattern", tiny_store, root / "nmer",
                               root / "conditions" / "missing_pattern",
                               outputs(root / "again", "missing_pattern"))  # fmt: skip
        yield {"root": root, "params": params, "metrics": metrics, "again": again}


def test_presets_fill_what_the_entry_leaves_out() -> None:
    params = nmer_params()
    spec = ModelSpec.from_params(params, "nmer")
    assert spec.options["residual"] is True and spec.options["vae_attention"] == "per_sample"
    assert spec.train_corruption is not None and spec.train_corruption["kind"] == "missing_pattern"
    assert spec.features["audio"] == "egemaps_functionals"  # the entry wins over the preset
    stage1 = TrainConfig.from_params(params, spec, "pretrain")
    stage2 = TrainConfig.from_params(params, spec)
    assert (stage1.beta1, stage1.grad_clip, stage1.lr) == (0.9, 0.5, 0.003)
    assert (stage2.beta1, stage2.grad_clip, stage2.lr) == (0.5, 1.0, 0.002)
    paper = validate_params({**params, "models": {"n": {"arch": "nmer", "preset": "iemocap"}}})
    spec = ModelSpec.from_params(paper, "n")
    assert spec.features == {"audio": "compare", "video": "denseface", "text": "bert_large"}
    cfg = TrainConfig.from_params(paper, spec)
    assert (cfg.epochs, cfg.decay_epochs, cfg.batch_size, cfg.lr) == (80, 40, 128, 0.0002)


def test_stage1_and_stage2_checkpoints(nmer_run: dict) -> None:
    root = nmer_run["root"]
    stage1 = torch.load(root / "nmer.pretrain" / "seed_1" / "fold_0.pt", weights_only=True)
    stage2 = torch.load(root / "nmer" / "seed_1" / "fold_0.pt", weights_only=True)
    assert stage1["meta"]["stage"] == "pretrain" and stage2["meta"]["stage"] == "train"
    assert any(k.startswith("vae.") for k in stage2["state_dict"])
    assert not any(k.startswith("vae.") for k in stage1["state_dict"])
    summary = json.loads((root / "nmer.pretrain" / "pretrain_summary.json").read_text())
    assert summary["model"] == "nmer" and len(summary["folds"]) == 3
    # Stage 1 on clean data beats chance (0.25) clearly on validation.
    assert sum(f["val"]["val_ua"] for f in summary["folds"]) / 3 > 0.5


def test_nmer_learns_and_reports_per_pattern(nmer_run: dict) -> None:
    clean = nmer_run["metrics"]["clean"]["levels"]["clean"]["ua"]
    patterns = nmer_run["metrics"]["missing_pattern"]["levels"]
    assert clean > 0.5, clean
    assert set(patterns) == {"azz", "zvz", "zzl", "avz", "azl", "zvl"}
    assert sum(p["ua"] for p in patterns.values()) / 6 > 0.4, patterns
    # Stochastic evaluation (noise, latent) is seeded: the same scores every time.
    assert nmer_run["again"] == nmer_run["metrics"]["missing_pattern"]


def test_pretrain_is_a_note_for_one_stage_models(tiny_store: Path, tmp_path: Path) -> None:
    out = pretrain_model(nmer_params(), "fusion_mlp", tiny_store, tmp_path / "p")
    assert json.loads((out / "pretrain_summary.json").read_text())["pretraining"] == "none"


def test_train_without_stage1_names_the_fix(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(DataError, match=r"stage-1 checkpoint not found.*robustmer pretrain nmer"):
        train_model(nmer_params(), "nmer", tiny_store, tmp_path / "n",
                    pretrain_dir=tmp_path / "absent")  # fmt: skip
