"""IMDer through the pipeline: presets, the released schedule and optimiser, pretrain -> train ->
evaluate on the tiny store, and the zero ablation on the same checkpoints."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustmer.config import ModelSpec, TrainConfig, validate_params
from robustmer.corruption import masks
from robustmer.corruption.condition_store import corrupt
from robustmer.corruption.training import TrainingCorruption
from robustmer.errors import ConfigError, DataError
from robustmer.evaluation.runner import evaluate_model
from robustmer.models.registry import build_model
from robustmer.training.loop import clip_gradients
from robustmer.training.runner import pretrain_model, train_model

CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_rate": {"kind": "missing_rate", "levels": [0.0, 0.6]},
}


def imder_params(**options: object) -> dict:
    from conftest import tiny_params_dict

    raw = tiny_params_dict()
    raw["models"]["imder"] = {
        "arch": "imder",
        "preset": "builtin_cpu",
        "features": {"audio": "egemaps_functionals", "video": "face_hog", "text": "minilm"},
        "options": {"sampler": "ode", "steps": 2, **options},
        "pretrain": {"epochs": 10, "batch_size": 16, "lr": 0.002, "patience": 0, "num_threads": 1},
        "train": {"epochs": 3, "batch_size": 32, "patience": 0, "num_threads": 1},
    }
    raw["corrupt"] = {"conditions": CONDITIONS}
    return validate_params(raw)


def outputs(root: Path, condition: str) -> dict[str, Path]:
    from conftest import eval_outputs

    return eval_outputs(root, "imder", condition)


@pytest.fixture(scope="module")
def imder_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("imder")
    params = imder_params()
    zeroed = imder_params(recovery=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for c in CONDITIONS:
            corrupt(params, c, tiny_store, root / "conditions" / c)
        pretrain_model(params, "imder", tiny_store, root / "imder.pretrain")
        train_model(params, "imder", tiny_store, root / "imder",
                    pretrain_dir=root / "imder.pretrain")  # fmt: skip

        def score(p: dict, condition: str, tag: str) -> dict:
            return evaluate_model(p, "imder", condition, tiny_store, root / "imder",
                                  root / "conditions" / condition,
                                  outputs(root / tag, condition))  # fmt: skip

        yield {
            "root": root,
            "metrics": {c: score(params, c, "eval") for c in CONDITIONS},
            "again": score(params, "missing_rate", "again"),
            "zeroed": score(zeroed, "missing_rate", "zeroed"),
        }


def test_presets_hold_the_published_settings() -> None:
    params = imder_params()
    spec = ModelSpec.from_params(params, "imder")
    assert spec.options["seq_len"] == 10 and spec.options["sampler"] == "ode"
    paper = validate_params({**params, "models": {"m": {"arch": "imder", "preset": "mosi"}}})
    spec = ModelSpec.from_params(paper, "m")
    assert spec.task == "regression" and spec.features["text"] == "bert"
    assert spec.options["steps"] == 100 and spec.options["sampler"] == "euler_maruyama"
    cfg = TrainConfig.from_params(paper, spec)
    assert (cfg.lr, cfg.batch_size, cfg.grad_clip, cfg.grad_clip_mode) == (0.002, 32, 1.0, "value")
    assert (cfg.lr_scheduler, cfg.plateau_patience, cfg.patience) == ("plateau", 24, 20)
    assert cfg.selection_metric == "loss" and cfg.seeds == (1111, 1112, 1113, 1114, 1115)
    mosei = ModelSpec.from_params(
        validate_params({**params, "models": {"m": {"arch": "imder", "preset": "mosei"}}}), "m"
    )
    assert mosei.options["nlevels"] == 6 and mosei.train["grad_clip"] == 0.6
    bimodal = imder_params()
    bimodal["models"]["imder"]["features"] = {"audio": "egemaps_functionals", "text": "minilm"}
    with pytest.raises(ConfigError, match="fuses audio, video and text"):
        build_model(ModelSpec.from_params(bimodal, "imder"), {"audio": 25, "text": 384}, 4)
    with pytest.raises(ConfigError, match="unknown imder options"):
        build_model(
            ModelSpec.from_params(imder_params(warp=1), "imder"),
            {"audio": 25, "video": 324, "text": 384}, 4,
        )  # fmt: skip


def test_mosi_sized_model_matches_the_paper_size() -> None:
    params = validate_params(
        {**imder_params(), "models": {"m": {"arch": "imder", "preset": "mosi"}}}
    )
    model = build_model(ModelSpec.from_params(params, "m"), {"audio": 5, "video": 20,
                                                              "text": 768}, 3)  # fmt: skip
    n = sum(p.numel() for p in model.parameters())
    assert 12.5e6 < n < 13.5e6  # about 13.0M without BERT (spec)
    assert model.mult.out_layer.out_features == 1  # regression: one output


def test_imder_schedule_drops_per_batch_first_batches_first() -> None:
    cfg = {"kind": "imder_schedule", "rate": 0.5}
    corruption = TrainingCorruption(cfg, ["audio", "video", "text"], seed=3)
    corruption.start_epoch(20)
    x = {m: torch.zeros(8, 2) for m in ("audio", "video", "text")}
    kept = []
    for _ in range(20):
        _, present = corruption(x)
        rows = torch.stack([present[m] for m in ("audio", "video", "text")], dim=1)
        assert (rows == rows[0]).all()  # one pattern per batch
        kept.append(int(rows[0].sum()))
    assert kept == masks.imder_batch_kept(20, 0.5).tolist()
    assert kept[0] == 1 and kept[-1] == 3  # the missing batches come first
    corruption.start_epoch(20)  # a new epoch restarts the schedule
    _, present = corruption(x)
    assert int(torch.stack(list(present.values())).sum(0)[0]) == 1
    with pytest.raises(ConfigError, match="audio, video and text"):
        TrainingCorruption(cfg, ["audio", "text"], seed=3)
    val = corruption.validation_masks(64)
    assert val is not None and sum(v[0] for v in val.values()) == 1


def test_clip_by_value_clamps_each_entry() -> None:
    model = torch.nn.Linear(3, 2)
    model.weight.grad = torch.tensor([[5.0, -0.2, 0.1], [-3.0, 0.4, 2.0]])
    model.bias.grad = torch.tensor([0.3, -7.0])
    clip_gradients(model, 1.0, "value")
    want = torch.tensor([[1.0, -0.2, 0.1], [-1.0, 0.4, 1.0]])
    assert torch.allclose(model.weight.grad, want)
    assert model.bias.grad.tolist() == pytest.approx([0.3, -1.0])


def test_imder_learns_and_recovers_on_the_tiny_corpus(imder_run: dict) -> None:
    clean = imder_run["metrics"]["clean"]["levels"]["clean"]["ua"]
    assert clean > 0.5, clean  # 4 balanced classes: chance 0.25
    levels = imder_run["metrics"]["missing_rate"]["levels"]
    assert levels["0"]["ua"] == pytest.approx(clean)  # MR 0: the MulT path, untouched
    assert levels["0.6"]["ua"] > 0.3
    # evaluation samples with a seeded generator: the same scores every time
    assert imder_run["again"]["levels"] == levels
    zeroed = imder_run["zeroed"]["levels"]
    assert zeroed["0"]["ua"] == pytest.approx(clean)  # recovery only acts on missing rows
    root = imder_run["root"]
    rec = pd.read_csv(outputs(root / "eval", "missing_rate")["predictions"])
    zero = pd.read_csv(outputs(root / "zeroed", "missing_rate")["predictions"])
    probs = [c for c in rec.columns if c.startswith("prob_")]
    complete = (rec[[f"present_{m}" for m in ("audio", "video", "text")]].all(axis=1)).to_numpy()
    diff = (rec[probs] - zero[probs]).abs().max(axis=1).to_numpy()
    assert diff[complete].max() < 1e-6 and diff[~complete].min() > 1e-6  # only missing rows move


def test_train_needs_its_pretraining(imder_run: dict, tiny_store: Path, tmp_path: Path) -> None:
    params = imder_params()
    with pytest.raises(DataError, match="stage-1 checkpoint not found"):
        train_model(params, "imder", tiny_store, tmp_path / "m", pretrain_dir=tmp_path / "none")
    summary = imder_run["root"] / "imder" / "train_summary.json"
    assert summary.is_file()


def test_plateau_scheduler_halves_the_lr(tiny_store: Path) -> None:
    from conftest import tiny_params_dict

    from robustmer.data.model_data import FoldTensors, Normaliser, data_folds, load_model_data
    from robustmer.data.store import FeatureStore
    from robustmer.models.registry import method
    from robustmer.seeding import seed_everything
    from robustmer.training.loop import FitJob, fit

    raw = tiny_params_dict(epochs=6, patience=0, lr_scheduler="plateau", plateau_patience=0,
                           plateau_factor=0.5, lr=1.0)  # fmt: skip
    params = validate_params(copy.deepcopy(raw))
    spec = ModelSpec.from_params(params, "fusion_mlp")
    cfg = TrainConfig.from_params(params, spec)
    data = load_model_data(FeatureStore(tiny_store), spec, method(spec.arch).frame_inputs)
    split = data_folds(data, cfg.val_speakers, cfg.seed)[0]
    seed_everything(1)
    tensors = FoldTensors(data, Normaliser.fit(data, split.train), torch.device("cpu"))
    model = build_model(spec, data.input_dims, len(data.classes))
    lrs: list[float] = []
    orig = torch.optim.Adam.step

    def spy(self: torch.optim.Adam, *a: object, **k: object) -> object:
        lrs.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "step", spy)
        result = fit(FitJob(model, tensors, split.train, split.val, cfg, len(data.classes), 1))
    losses = [h["val_loss"] for h in result.history]
    drops = sorted(set(np.round(lrs, 6)), reverse=True)
    assert drops[0] == 1.0 and len(drops) > 1  # lr 1.0 diverges: the plateau halves it
    assert all(b == pytest.approx(a / 2) for a, b in itertools.pairwise(drops))
    assert len(losses) == 6
