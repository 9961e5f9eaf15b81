"""Shared fixtures: telemetry off for the whole session and a tiny learnable feature store."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# Before any test imports MLflow or Great Expectations: no telemetry, no analytics.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["GX_ANALYTICS_ENABLED"] = "false"

CLASSES = ("neutral", "happy", "angry", "sad")

# feature name -> (level, dim, signal): signal scales the class-mean separation.
DEFAULT_FEATURES: dict[str, tuple[str, int, float]] = {
    "audio/egemaps_functionals": ("utterance", 12, 1.0),
    "text/minilm": ("utterance", 16, 0.6),
    "video/face_hog_mean": ("utterance", 10, 0.8),
    "video/face_hog": ("frame", 10, 0.8),
}


def build_synthetic_store(
    root: Path,
    *,
    n_speakers: int = 6,
    per_speaker: int = 20,
    n_folds: int = 3,
    features: dict[str, tuple[str, int, float]] | None = None,
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
    frames: tuple[int, int] = (3, 9),
    unlabelled_fraction: float = 0.0,
    valence: bool = False,
) -> Path:
    """A learnable store: features = class mean * signal + speaker offset + noise.

    `unlabelled_fraction` of each speaker's rows become an unlabelled pool (label "", the
    true class in `withheld_label`), drawn from their own seed stream.

    Speakers are dealt round-robin into `n_folds` folds; classes cycle within each speaker so
    every speaker has every class. Frame features get a random length per utterance in
    `frames`; `video/face_hog_mean` is the mean of `video/face_hog` when both are present.
    `valence` adds a MER2023-style `valence` column: a per-class value in [-3, 3] plus noise,
    unknown (NaN) on every 7th utterance.
    """
    from robustmer.data.store import FeatureMeta, StoreWriter

    features = DEFAULT_FEATURES if features is None else features
    rng = np.random.default_rng(seed)
    n = n_speakers * per_speaker
    speakers = np.repeat([f"spk{s:02d}" for s in range(n_speakers)], per_speaker)
    labels = np.tile(np.arange(per_speaker) % len(classes), n_speakers)
    for s in range(n_speakers):  # shuffle each speaker's order, keep its class counts
        rng.shuffle(labels[s * per_speaker : (s + 1) * per_speaker])
    folds = np.repeat(np.arange(n_speakers) % n_folds, per_speaker)
    manifest = pd.DataFrame(
        {
            "sample_id": [f"utt{i:04d}" for i in range(n)],
            "speaker": speakers,
            "label": [classes[c] for c in labels],
            "text": ["synthetic"] * n,
            "source": ["synthetic"] * n,
            "fold": folds.astype(np.int64),
        }
    )
    if valence:
        value_rng = np.random.default_rng(seed + 2)
        per_class = np.linspace(-3.0, 3.0, len(classes))
        values = per_class[labels] + value_rng.normal(0.0, 0.5, n)
        values[::7] = np.nan
        manifest["valence"] = values
    info: dict[str, Any] = {}
    if unlabelled_fraction > 0:
        from robustmer.data.builtin.generate import withhold_labels

        manifest = withhold_labels(manifest, unlabelled_fraction, seed + 1)
        info["unlabelled"] = int((manifest["label"] == "").sum())
    writer = StoreWriter(root, "synthetic", classes)
    writer.write_manifest(manifest)
    speaker_index = np.repeat(np.arange(n_speakers), per_speaker)
    frame_means: dict[str, list[np.ndarray]] = {}
    for name, (level, dim, signal) in sorted(features.items(), key=lambda kv: kv[1][0] != "frame"):
        modality, extractor = name.split("/")
        class_means = rng.normal(0.0, 1.0, (len(classes), dim)) * signal
        offsets = rng.normal(0.0, 0.3, (n_speakers, dim))
        centre = class_means[labels] + offsets[speaker_index] + 5.0  # non-zero mean on purpose
        if level == "frame":
            seqs = [
                (c + rng.normal(0.0, 1.0, (int(rng.integers(*frames, endpoint=True)), dim)))
                for c in centre
            ]
            frame_means[modality] = [s.mean(axis=0) for s in seqs]
        elif modality in frame_means and frame_means[modality][0].shape[0] == dim:
            seqs = [m[None, :] for m in frame_means[modality]]
        else:
            seqs = [(c + rng.normal(0.0, 1.0, dim))[None, :] for c in centre]
        meta = FeatureMeta(modality, extractor, level, dim, frame_rate=None, version="test")
        writer.add_feature(meta, [np.asarray(s, dtype=np.float32) for s in seqs])
    writer.finalize(info or None)
    return root


def tiny_params_dict(**train: Any) -> dict[str, Any]:
    """Validated params for fast tests: two baselines, one of them on frame sequences (LSTM)."""
    from robustmer.config import validate_params

    raw = {
        "seed": 7,
        "dataset": "builtin",
        "device": "cpu",
        "train": {
            "epochs": 12,
            "batch_size": 16,
            "patience": 6,
            "lr": 0.003,
            "num_threads": 1,
            **train,
        },
        "models": {
            "fusion_mlp": {
                "arch": "early_fusion",
                "features": {
                    "audio": "egemaps_functionals",
                    "video": "face_hog_mean",
                    "text": "minilm",
                },
                "hidden_dim": 32,
                "dropout": 0.1,
            },
            "attention_lstm": {
                "arch": "mer2024_attention",
                "features": {"audio": "egemaps_functionals", "video": "face_hog"},
                "hidden_dim": 32,
                "dropout": 0.1,
            },
        },
        "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
        "mlflow": {"experiment": "robustmer-tests"},
    }
    return validate_params(raw)


def eval_outputs(results: Path, model: str, condition: str) -> dict[str, Path]:
    """The files `evaluate_model` writes, laid out as robustmer.paths lays them out."""
    return {
        "metrics": results / "metrics" / model / f"{condition}.json",
        "scores": results / "scores" / model / f"{condition}.csv",
        "predictions": results / "predictions" / condition / f"{model}.csv",
        "confusion_png": results / "plots" / condition / f"{model}_confusion.png",
        "confusion_csv": results / "plots" / condition / f"{model}_confusion.csv",
    }


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`extract` caches per item: in tests under a session folder, never the project's data/."""
    os.environ["ROBUSTMER_FEATURE_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def store_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a synthetic store in a fresh temporary folder: `store_factory(**kwargs)`."""

    def make(**kwargs: Any) -> Path:
        return build_synthetic_store(tmp_path_factory.mktemp("store"), **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_store(store_factory: Callable[..., Path]) -> Path:
    """6 speakers x 20 utterances, 3 speaker folds, 4 classes, utterance and frame features."""
    return store_factory()


@pytest.fixture
def tiny_params() -> dict[str, Any]:
    return tiny_params_dict()


@pytest.fixture
def mlflow_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store for the test, through MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def interrupt_at(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`interrupt_at(fit=i, epoch=e, fold=k)`: raise KeyboardInterrupt once, right after that
    epoch state is saved; later saves (the rerun) go through (tests/test_resume.py)."""
    from robustmer.training import resume

    original = resume.FitCheckpoints.save_epoch

    def arm(fit: int, epoch: int, fold: int, seed: int = 1) -> None:
        fired: list[bool] = []

        def save_then_stop(self: resume.FitCheckpoints, payload: Any) -> None:
            original(self, payload)
            path = self.epoch_path
            if fired or path.name != f"fit_{fit}.epoch.pt":
                return
            if path.parent.as_posix().endswith(f"seed_{seed}/fold_{fold}"):
                state = self.load_epoch()
                if state is not None and state["epoch"] == epoch:
                    fired.append(True)
                    raise KeyboardInterrupt(f"test: stop after epoch {epoch} of fit {fit}")

        monkeypatch.setattr(resume.FitCheckpoints, "save_epoch", save_then_stop)

    return arm
