"""temporal_drop: frames removed inside a modality, the same for every model, at evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import eval_outputs, tiny_params_dict

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.corruption.conditions import Condition
from robustmer.corruption.temporal import drop_sequences, kept_frames
from robustmer.errors import ConfigError
from robustmer.evaluation.runner import evaluate_model
from robustmer.training.runner import train_model

LEVELS = [0.0, 0.5, 0.9]
CONDITIONS = {
    "clean": {"kind": "clean"},
    "frames": {"kind": "temporal_drop", "levels": LEVELS},
    "block": {"kind": "temporal_drop", "levels": [0.9], "mode": "block", "modalities": ["audio"]},
}


@pytest.mark.parametrize(("n", "fraction", "kept"), [(10, 0.3, 7), (10, 0.25, 7), (4, 0.5, 2),
                                                     (3, 0.9, 1), (1, 0.9, 1), (0, 0.5, 0),
                                                     (8, 0.0, 8)])  # fmt: skip
@pytest.mark.parametrize("mode", ["random", "block"])
def test_the_share_of_frames_removed(n: int, fraction: float, kept: int, mode: str) -> None:
    index = kept_frames(n, fraction, mode, np.random.default_rng(0))
    assert len(index) == kept  # fraction * n rounded half up, at least one frame kept
    assert np.all(np.diff(index) > 0) and set(index) <= set(range(n))
    if mode == "block":
        removed = np.setdiff1d(np.arange(n), index)
        assert len(removed) == 0 or np.all(np.diff(removed) == 1)  # one contiguous block


@pytest.mark.parametrize("mode", ["random", "block"])
def test_every_frame_is_equally_likely_to_go(mode: str) -> None:
    rng = np.random.default_rng(3)
    gone = np.zeros(10)
    for _ in range(4000):
        gone[np.setdiff1d(np.arange(10), kept_frames(10, 0.3, mode, rng))] += 1
    share = gone / 4000
    if mode == "random":
        assert np.abs(share - 0.3).max() < 0.03
    else:  # a block of 3 starting uniformly at 0..7: the ends go less often than the middle
        assert share[0] == pytest.approx(1 / 8, abs=0.03)
        assert share[4] == pytest.approx(3 / 8, abs=0.03)


def test_drop_sequences_keeps_the_surviving_rows_in_order() -> None:
    values = np.arange(12, dtype=np.float32)[:, None]
    offsets = np.array([0, 5, 5, 12])  # lengths 5, 0, 7
    out, new = drop_sequences(values, offsets, np.array([0.4, 0.5, 0.0]), np.array([1, 2, 3]),
                              "random")  # fmt: skip
    assert list(np.diff(new)) == [3, 0, 7]
    assert list(out[3:, 0]) == list(range(5, 12))  # fraction 0: untouched
    assert set(out[:3, 0]) <= set(range(5))
    again, _ = drop_sequences(values, offsets, np.array([0.4, 0.5, 0.0]), np.array([1, 2, 3]),
                              "random")  # fmt: skip
    assert np.array_equal(out, again)  # drawn from the seeds only


def test_bad_temporal_drop_entries_are_refused() -> None:
    raw = tiny_params_dict()
    raw["corrupt"] = {"conditions": {"f": {"kind": "temporal_drop", "levels": [1.0]}}}
    with pytest.raises(ConfigError, match="fractions must be in"):
        from robustmer.corruption.conditions import build_records

        cond = Condition.from_params(validate_params(raw), "f")
        build_records(cond, pd.DataFrame({"sample_id": ["a"]}), 1)
    raw["corrupt"] = {"conditions": {"f": {"kind": "missing_rate", "levels": [0.5],
                                           "mode": "block"}}}  # fmt: skip
    with pytest.raises(ConfigError, match="temporal_drop setting"):
        Condition.from_params(validate_params(raw), "f")
    raw["corrupt"] = {"conditions": {"f": {"kind": "temporal_drop", "levels": [0.5],
                                           "mode": "blocks"}}}  # fmt: skip
    with pytest.raises(ConfigError):
        validate_params(raw)


@pytest.fixture(scope="module")
def dropped(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three models: LSTM over video frames, an MLP over the same frames' mean, and an MLP over
    the stored utterance-level video mean (nothing to remove)."""
    root = tmp_path_factory.mktemp("temporal")
    raw = tiny_params_dict(epochs=8)
    frame_mlp = {"arch": "early_fusion", "features": {"video": "face_hog"}, "hidden_dim": 32}
    utterance_mlp = {**frame_mlp, "features": {"video": "face_hog_mean"}}
    raw["models"] = {"attention_lstm": raw["models"]["attention_lstm"],
                     "frame_mlp": frame_mlp, "utterance_mlp": utterance_mlp}  # fmt: skip
    raw["corrupt"] = {"conditions": CONDITIONS}
    params = validate_params(raw)
    out: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for c in CONDITIONS:
            corrupt(params, c, tiny_store, root / "c" / c)
        for model in params["models"]:
            train_model(params, model, tiny_store, root / model)
            for c in CONDITIONS:
                files = eval_outputs(root / "eval", model, c)
                evaluate_model(params, model, c, tiny_store, root / model, root / "c" / c, files)
                out[model, c] = pd.read_csv(files["predictions"], dtype={"level": str})
    return out


def _probabilities(frame: pd.DataFrame, level: str) -> np.ndarray:
    part = frame[frame["level"].astype(str) == level]
    return part[[c for c in part.columns if c.startswith("prob_")]].to_numpy()


@pytest.mark.parametrize("model", ["attention_lstm", "frame_mlp"])
def test_frame_models_lose_frames_and_level_zero_is_clean(dropped: dict, model: str) -> None:
    clean = _probabilities(dropped[model, "clean"], "clean")
    assert clean.shape[1] == 4
    assert np.array_equal(_probabilities(dropped[model, "frames"], "0"), clean)
    assert not np.allclose(_probabilities(dropped[model, "frames"], "0.9"), clean)
    # The block condition removes audio frames only: these models read video, so no change.
    assert np.array_equal(_probabilities(dropped[model, "block"], "0.9"), clean)


def test_utterance_level_features_have_no_frames_to_remove(dropped: dict) -> None:
    clean = _probabilities(dropped["utterance_mlp", "clean"], "clean")
    assert np.array_equal(_probabilities(dropped["utterance_mlp", "frames"], "0.9"), clean)
