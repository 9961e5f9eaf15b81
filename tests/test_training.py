"""Folds, normalisation, labels and the training loop on the tiny learnable store."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from robustmer.config import ModelSpec, TrainConfig, validate_params
from robustmer.data.model_data import (
    FoldTensors,
    Normaliser,
    encode_labels,
    load_model_data,
    speaker_folds,
)
from robustmer.data.store import FeatureStore
from robustmer.device import configure_threads, resolve_device
from robustmer.errors import ConfigError, DataError
from robustmer.metrics import classification_metrics
from robustmer.models.registry import build_model, method
from robustmer.seeding import seed_everything
from robustmer.training.loop import FitJob, cosine_lambda, fit, make_optimiser, predict_logits
from robustmer.training.weight_average import WeightAverage


def model_data(store_dir: Path, params: dict[str, Any], name: str) -> tuple[ModelSpec, Any]:
    spec = ModelSpec.from_params(params, name)
    data = load_model_data(
        FeatureStore(store_dir), spec, frame_inputs=method(spec.arch).frame_inputs
    )
    return spec, data


def test_folds_are_speaker_disjoint_and_cover_every_sample(tiny_store: Path) -> None:
    manifest = FeatureStore(tiny_store).manifest
    folds = speaker_folds(manifest, val_speakers=1, seed=3)
    assert [f.fold for f in folds] == [0, 1, 2]
    speakers = manifest["speaker"].to_numpy()
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(manifest)))  # each sample tested once
    for f in folds:
        sets = [set(speakers[f.train]), set(speakers[f.val]), set(speakers[f.test])]
        assert all(sets), "no empty set"
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert sets[1] == set(f.val_speakers) and len(f.val_speakers) == 1
        assert sets[2] == set(f.test_speakers)
        assert len(f.train) + len(f.val) + len(f.test) == len(manifest)
        assert (manifest["fold"].to_numpy()[f.test] == f.fold).all()
    # Seeded: the same seed gives the same validation speakers, another seed may not.
    again = speaker_folds(manifest, val_speakers=1, seed=3)
    assert [f.val_speakers for f in again] == [f.val_speakers for f in folds]


def test_fold_errors() -> None:
    manifest = pd.DataFrame({"speaker": ["a", "a", "b", "c"], "fold": [0, 1, 1, 2]})
    with pytest.raises(DataError, match="speaker 'a' appears in folds \\[0, 1\\]"):
        speaker_folds(manifest, 1, 0)
    manifest = pd.DataFrame({"speaker": ["a", "b", "c"], "fold": [0, 1, 2]})
    with pytest.raises(DataError, match=r"lower cv\.val_speakers"):
        speaker_folds(manifest, 2, 0)


def test_unknown_label_names_the_sample() -> None:
    manifest = pd.DataFrame({"sample_id": ["s1", "s2"], "label": ["happy", "bored"]})
    with pytest.raises(DataError, match="sample 's2' has label 'bored'"):
        encode_labels(manifest, ["neutral", "happy"], source="m.parquet")
    assert encode_labels(manifest.iloc[:1], ["neutral", "happy"], "m").tolist() == [1]


def test_normaliser_uses_training_rows_only(tiny_store: Path, tiny_params: dict) -> None:
    _, data = model_data(tiny_store, tiny_params, "attention_lstm")
    fold = speaker_folds(data.manifest, 1, 0)[0]
    norm = Normaliser.fit(data, fold.train)
    audio = data.inputs["audio"].values
    np.testing.assert_allclose(norm.mean["audio"], audio[fold.train].mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.std["audio"], audio[fold.train].std(0), rtol=1e-4)
    # Frame features: statistics over every frame of the training utterances.
    video = data.inputs["video"]
    frames = np.concatenate([video.values[video.offsets[i] : video.offsets[i + 1]]
                             for i in fold.train])  # fmt: skip
    np.testing.assert_allclose(norm.mean["video"], frames.mean(0), rtol=1e-5)
    # Changing validation/test rows does not move the statistics.
    audio_copy = audio.copy()
    data.inputs["audio"].values = audio_copy
    audio_copy[fold.test] += 100.0
    audio_copy[fold.val] -= 100.0
    assert np.allclose(Normaliser.fit(data, fold.train).mean["audio"], norm.mean["audio"])
    # Round trip through the checkpoint form.
    back = Normaliser.from_state(norm.state())
    np.testing.assert_array_equal(back.std["video"], norm.std["video"])
    # Training rows come out standardised.
    z = norm.apply("audio", audio[fold.train])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)


def test_constant_feature_normalises_to_zero() -> None:
    from robustmer.data.model_data import ModalityInput, ModelData

    x = np.ones((4, 2), dtype=np.float32)
    data = ModelData({"audio": ModalityInput("audio/x", "utterance", x)}, np.zeros(4, int),
                     pd.DataFrame(), ["a"])  # fmt: skip
    norm = Normaliser.fit(data, np.arange(4))
    assert norm.std["audio"].tolist() == [1.0, 1.0]
    assert np.all(norm.apply("audio", x + 1) == 1.0)


def test_frame_batches_are_padded_with_lengths(tiny_store: Path, tiny_params: dict) -> None:
    _, data = model_data(tiny_store, tiny_params, "attention_lstm")
    tensors = FoldTensors(data, Normaliser.fit(data, np.arange(len(data))), torch.device("cpu"))
    inputs, lengths, y = tensors.batch(np.array([0, 5, 9]))
    offsets = data.inputs["video"].offsets
    expected = [int(offsets[i + 1] - offsets[i]) for i in (0, 5, 9)]
    assert lengths is not None and lengths["video"].tolist() == expected
    assert inputs["video"].shape == (3, max(expected), data.input_dims["video"])
    assert inputs["audio"].shape == (3, data.input_dims["audio"])
    assert y.tolist() == data.labels[[0, 5, 9]].tolist()


def _fit_fold(
    store: Path, params: dict, name: str, seed: int = 11, on_epoch: Any = None
) -> tuple[Any, float]:
    spec, data = model_data(store, params, name)
    cfg = TrainConfig.from_params(params)
    fold = speaker_folds(data.manifest, 1, 0)[0]
    configure_threads(cfg.num_threads, torch.device("cpu"))
    seed_everything(seed)
    tensors = FoldTensors(data, Normaliser.fit(data, fold.train), torch.device("cpu"))
    model = build_model(spec, data.input_dims, len(data.classes), data.levels)
    if on_epoch is not None:
        on_epoch = on_epoch(model)
    job = FitJob(model, tensors, fold.train, fold.val, cfg, len(data.classes), seed, on_epoch)
    result = fit(job)
    probs = predict_logits(model, tensors, fold.test).numpy()
    result.val_ua = classification_metrics(
        data.labels[fold.val], predict_logits(model, tensors, fold.val).numpy().argmax(1), 4
    )["ua"]
    acc = classification_metrics(data.labels[fold.test], probs.argmax(1), 4)["wa"]
    return result, acc


@pytest.mark.parametrize("name", ["fusion_mlp", "attention_lstm"])
def test_each_arch_learns(tiny_store: Path, name: str) -> None:
    from conftest import tiny_params_dict

    params = tiny_params_dict(epochs=15, patience=0)
    result, test_acc = _fit_fold(tiny_store, params, name)
    losses = [h["train_loss"] for h in result.history]
    assert result.epochs_run == 15
    assert losses[-1] < 0.6 * losses[0], losses
    assert test_acc > 0.6, test_acc  # 4 balanced classes: chance is 0.25
    assert result.best_metrics["val_ua"] > 0.6


def test_training_is_deterministic_and_keeps_the_best_epoch(
    tiny_store: Path, tiny_params: dict
) -> None:
    first, acc1 = _fit_fold(tiny_store, tiny_params, "attention_lstm", seed=5)
    second, acc2 = _fit_fold(tiny_store, tiny_params, "attention_lstm", seed=5)
    assert acc1 == acc2 and first.best_epoch == second.best_epoch
    for key, value in first.state_dict.items():
        assert torch.equal(value, second.state_dict[key]), key
    best = max(h["val_ua"] for h in first.history)
    assert first.best_metrics["val_ua"] == best
    assert first.history[first.best_epoch - 1]["val_ua"] == best
    assert first.best_epoch == min(h["epoch"] for h in first.history if h["val_ua"] == best)


def test_early_stopping(store_factory: Callable[..., Path]) -> None:
    from conftest import tiny_params_dict

    # Pure noise: validation UA stalls, so training stops `patience` epochs after the best.
    store = store_factory(seed=4, features={"audio/egemaps_functionals": ("utterance", 6, 0.0)})
    params = tiny_params_dict(epochs=200, patience=3)
    params["models"]["noise"] = {**params["models"]["fusion_mlp"],
                                 "features": {"audio": "egemaps_functionals"}}  # fmt: skip
    result, _ = _fit_fold(store, params, "noise")
    assert result.epochs_run < 200
    assert result.epochs_run - result.best_epoch == 3


def test_weight_average_keeps_the_mean_of_the_last_epochs() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    last3, all_of_them = WeightAverage(3, epochs=5), WeightAverage(30, epochs=4)
    for epoch in range(1, 6):
        with torch.no_grad():
            net[0].weight.fill_(epoch)
            net[1].num_batches_tracked.fill_(epoch)
        last3.update(epoch, net)
        if epoch <= 4:
            all_of_them.update(epoch, net)
    assert last3.count == 3 and torch.equal(last3.mean["0.weight"], torch.full((2, 2), 4.0))
    assert int(last3.mean["1.num_batches_tracked"]) == 5  # integer buffers: the last value
    assert torch.equal(all_of_them.mean["0.weight"], torch.full((2, 2), 2.5))  # a shorter run
    with pytest.raises(ValueError, match="average_last"):
        WeightAverage(0, epochs=5)


def test_a_fit_with_average_last_keeps_and_scores_the_averaged_weights(tiny_store: Path) -> None:
    from conftest import tiny_params_dict

    params = tiny_params_dict(epochs=8, patience=0, average_last=3)
    states: list[dict[str, torch.Tensor]] = []

    def record(model: torch.nn.Module) -> Callable[[int, dict], None]:
        return lambda epoch, metrics: states.append(
            {k: v.detach().clone() for k, v in model.state_dict().items()}
        )

    result, test_acc = _fit_fold(tiny_store, params, "fusion_mlp", on_epoch=record)
    assert len(states) == 8 and result.best_epoch == 8
    for key, value in result.state_dict.items():
        expected = sum(s[key] for s in states[5:]) / 3
        assert torch.allclose(value, expected, atol=1e-6), key
        assert not torch.allclose(value, states[-1][key]), key  # not just the last epoch
    assert result.best_metrics["val_ua"] == pytest.approx(result.val_ua)  # the averaged model's
    assert result.history[-1]["train_loss"] < 0.6 * result.history[0]["train_loss"]
    assert test_acc > 0.6, test_acc  # it learns: 4 balanced classes, chance 0.25
    params["train"]["patience"] = 3
    with pytest.raises(ConfigError, match="set patience: 0 beside it"):
        TrainConfig.from_params(validate_params(params))


def test_cosine_schedule_warms_up_then_falls_to_min_lr(tiny_store: Path) -> None:
    from conftest import tiny_params_dict

    params = tiny_params_dict(epochs=15, patience=0)
    lr = params["train"]["lr"]
    params["train"] |= {"lr_scheduler": "cosine", "warmup_epochs": 1, "min_lr": lr / 10,
                        "optimizer": "adamw"}  # fmt: skip
    cfg = TrainConfig.from_params(validate_params(params))
    factor = cosine_lambda(cfg, total_steps=40, steps_per_epoch=10)
    assert [factor(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert factor(9) == pytest.approx(1.0)  # warm-up ends at the full LR
    assert factor(10) == pytest.approx(1.0) and factor(39) == pytest.approx(0.1)  # min_lr / lr
    middle = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 15 / 29))
    assert factor(25) == pytest.approx(middle)
    assert all(factor(s) > factor(s + 1) for s in range(10, 39))
    optimiser = make_optimiser(torch.nn.Linear(2, 2), cfg)
    assert isinstance(optimiser, torch.optim.AdamW)
    assert optimiser.defaults["weight_decay"] == params["train"]["weight_decay"]
    result, acc = _fit_fold(tiny_store, params, "fusion_mlp")  # the loop learns with both
    assert result.epochs_run == 15 and acc > 0.6, acc
    params["train"]["decay_epochs"] = 2
    with pytest.raises(ConfigError, match="decay_epochs and lr_scheduler cosine"):
        TrainConfig.from_params(validate_params(params))


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
