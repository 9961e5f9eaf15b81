"""VAT through the pipeline: label-free pretraining on every non-test row, fine-tuning with
momentum distillation, evaluation under every missing pattern, the ablation switches, and an
interrupted pretraining that resumes to the same checkpoint (queue, momentum model and ramp).

The losses and pieces against hand-computed values are in test_vat_parts.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_synthetic_store, eval_outputs, tiny_params_dict
from test_resume import checkpoints, rows

from robustmer.config import ModelSpec, TrainConfig, validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.model_data import data_folds, load_model_data
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError
from robustmer.evaluation.runner import evaluate_model
from robustmer.io import read_json
from robustmer.training import resume
from robustmer.training.checkpoint import load_checkpoint
from robustmer.training.runner import pretrain_model, train_model

FEATURES = {
    "audio/egemaps_lld": ("frame", 8, 1.0),
    "video/face_hog": ("frame", 10, 0.8),
    "text/minilm": ("utterance", 16, 0.6),
}
CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_pattern": {"kind": "missing_pattern"},
    "missing_rate": {"kind": "missing_rate", "levels": [0.5]},
}


def vat_params(options: dict | None = None, **train: object) -> dict:
    raw = tiny_params_dict(**train)
    raw["models"] = {
        "vat": {
            "arch": "vat",
            "features": {"audio": "egemaps_lld", "video": "face_hog"},
            "hidden_dim": 16,
            "dropout": 0.1,
            "options": {"heads": 2, "video_layers": 1, "audio_layers": 1, "queue_size": 32,
                        "max_frames": 8, **(options or {})},
            "pretrain": {"epochs": 4, "batch_size": 16, "lr": 0.002, "optimizer": "adamw",
                         "weight_decay": 0.02},
            "train": {"epochs": 14, "batch_size": 16, "lr": 0.003, "optimizer": "adamw",
                      "weight_decay": 0.02, "lr_scheduler": "cosine", "warmup_epochs": 1,
                      "min_lr": 1.0e-4, "patience": 0},
        }
    }  # fmt: skip
    raw["corrupt"] = {"conditions": CONDITIONS}
    return validate_params(raw)


@pytest.fixture(scope="module")
def vat_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vat-store")
    return build_synthetic_store(root, n_speakers=6, per_speaker=20, features=FEATURES,
                                 frames=(6, 20), unlabelled_fraction=0.5)  # fmt: skip


@pytest.fixture(scope="module")
def vat_run(vat_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("vat")
    params = vat_params()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for c in CONDITIONS:
            corrupt(params, c, vat_store, root / "conditions" / c)
        pretrain_model(params, "vat", vat_store, root / "vat.pretrain")
        train_model(params, "vat", vat_store, root / "vat", pretrain_dir=root / "vat.pretrain")
        metrics = {
            c: evaluate_model(params, "vat", c, vat_store, root / "vat",
                              root / "conditions" / c, eval_outputs(root / "eval", "vat", c))
            for c in CONDITIONS
        }  # fmt: skip
        yield {"root": root, "params": params, "metrics": metrics}


def test_pretraining_reads_every_row_but_the_test_rows(vat_run: dict, vat_store: Path) -> None:
    params = vat_run["params"]
    spec = ModelSpec.from_params(params, "vat")
    data = load_model_data(FeatureStore(vat_store), spec, frame_inputs=True)
    summary = read_json(vat_run["root"] / "vat.pretrain" / "pretrain_summary.json")
    cfg = TrainConfig.from_params(params, spec)
    folds = {s.fold: s for s in data_folds(data, cfg.val_speakers, cfg.seed)}
    for row in summary["folds"]:
        split = folds[row["fold"]]
        expected = len(split.train) + len(split.val) + len(split.unlabelled)
        assert row["extra"]["n_rows"] == expected > len(split.train) + len(split.val)
        assert row["extra"]["queue_size"] == 32
        assert 0.001 <= row["extra"]["temperature"] <= 0.5
        state = load_checkpoint(vat_run["root"] / "vat.pretrain" / row["checkpoint"],
                                "vat")["state_dict"]  # fmt: skip
        assert not any(k.startswith(("momentum.", "proj.")) or "queue" in k for k in state)


def test_pretraining_loss_falls(vat_run: dict) -> None:
    import mlflow

    summary = read_json(vat_run["root"] / "vat.pretrain" / "pretrain_summary.json")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{vat_run['root']}/mlflow.db")
    for row in summary["folds"]:
        history = client.get_metric_history(row["mlflow_run_id"], "pretrain/train_loss")
        losses = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert len(losses) == 4 and losses[-1] < losses[0], losses


def test_vat_learns_and_its_checkpoint_has_no_momentum_model(vat_run: dict) -> None:
    clean = vat_run["metrics"]["clean"]["levels"]["clean"]
    assert clean["ua"] > 0.5, clean  # four classes: chance is 0.25
    summary = read_json(vat_run["root"] / "vat" / "train_summary.json")
    for row in summary["folds"]:
        assert row["extra"] == {"pretrained": True, "distillation": True}
        state = load_checkpoint(vat_run["root"] / "vat" / row["checkpoint"], "vat")["state_dict"]
        assert not any(k.startswith("momentum.") for k in state)


def test_every_missing_pattern_is_scored(vat_run: dict) -> None:
    """VAT has no recovery: a missing stream reaches it as zero frames (models/missing.py). Every
    pattern gets finite scores; losing both of its streams leaves it near chance."""
    levels = vat_run["metrics"]["missing_pattern"]["levels"]
    assert len(levels) == 6
    for name, scores in levels.items():
        assert np.isfinite(scores["ua"]), name
    clean = vat_run["metrics"]["clean"]["levels"]["clean"]["ua"]
    assert vat_run["metrics"]["missing_rate"]["levels"]["0.5"]["ua"] < clean


def test_ablations_train_without_pretraining_or_distillation(
    vat_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = vat_params({"pretraining": False, "distillation": False}, seeds=[1])
    params["models"]["vat"]["train"]["epochs"] = 2
    pretrain_model(params, "vat", vat_store, tmp_path / "vat.pretrain")
    summary = read_json(tmp_path / "vat.pretrain" / "pretrain_summary.json")
    assert all(r["extra"] == {"pretraining": False} and r["epochs_run"] == 0
               for r in summary["folds"])  # fmt: skip
    train_model(params, "vat", vat_store, tmp_path / "vat", pretrain_dir=tmp_path / "vat.pretrain")
    summary = read_json(tmp_path / "vat" / "train_summary.json")
    assert all(r["extra"] == {"pretrained": False, "distillation": False}
               for r in summary["folds"])  # fmt: skip


def test_a_queue_that_is_not_a_multiple_of_the_batch_is_refused(
    vat_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = vat_params({"queue_size": 40})
    with pytest.raises(ConfigError, match=r"options\.queue_size: 40 is not a multiple of the "
                                          r"pretraining batch size 16"):  # fmt: skip
        pretrain_model(params, "vat", vat_store, tmp_path / "vat.pretrain")
    assert not (tmp_path / "vat.pretrain").exists()


def test_interrupted_pretraining_and_training_resume_identically(
    vat_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt_at: object
) -> None:
    """The queue, its pointer, the momentum model, the ramp's step counter and the recipe's
    generator (hard negatives, masking) are part of the epoch state, so a stopped fit resumes
    to the same checkpoint."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = vat_params({"time_mask": 0.2, "feature_mask": 0.2}, checkpoint_every_s=0,
                        seeds=[1])  # fmt: skip
    params["models"]["vat"]["pretrain"]["epochs"] = 3
    params["models"]["vat"]["train"].update(epochs=3)
    params["models"]["vat"]["train_corruption"] = {"kind": "missing_rate", "rate": 0.3}
    straight = tmp_path / "straight"
    pretrain_model(params, "vat", vat_store, straight / "vat.pretrain")
    train_model(params, "vat", vat_store, straight / "vat", pretrain_dir=straight / "vat.pretrain")

    models = tmp_path / "models"
    interrupt_at(fit=0, epoch=2, fold=1)  # type: ignore[operator]
    with pytest.raises(KeyboardInterrupt):
        pretrain_model(params, "vat", vat_store, models / "vat.pretrain")
    pretrain_model(params, "vat", vat_store, models / "vat.pretrain")
    assert checkpoints(models / "vat.pretrain") == checkpoints(straight / "vat.pretrain")
    interrupt_at(fit=0, epoch=1, fold=2)  # type: ignore[operator]
    with pytest.raises(KeyboardInterrupt):
        train_model(params, "vat", vat_store, models / "vat", pretrain_dir=models / "vat.pretrain")
    assert (resume.building_dir(models / "vat") / "resume" / "seed_1" / "fold_2").is_dir()
    train_model(params, "vat", vat_store, models / "vat", pretrain_dir=models / "vat.pretrain")
    assert checkpoints(models / "vat") == checkpoints(straight / "vat")
    assert rows(models / "vat") == rows(straight / "vat")


def test_text_joins_as_a_third_stream() -> None:
    from robustmer.models.vat.network import VAT
    from robustmer.models.vat.pretrain import VATPretrain

    torch.manual_seed(0)
    core = VAT({"audio": 5, "video": 6, "text": 7}, 3, width=8, heads=2, video_layers=1,
               audio_layers=1)  # fmt: skip
    batch = {"audio": torch.randn(4, 5, 5), "video": torch.randn(4, 3, 6),
             "text": torch.randn(4, 7)}  # fmt: skip
    assert core(batch).shape == (4, 3)
    without_text = core({**batch, "text": torch.zeros(4, 7)})
    assert not torch.allclose(core.eval()(batch), without_text.detach())
    loss, parts = VATPretrain(core, embed_dim=4, queue_size=0).loss(
        batch, None, torch.arange(4), steps_per_epoch=1
    )
    assert torch.isfinite(loss) and parts["vam"] > 0
