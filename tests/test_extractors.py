"""Extractors on real media from the built-in generator: shapes, dims, bad-file errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustmer.config import validate_params
from robustmer.data.builtin import generate_corpus
from robustmer.data.store import FeatureStore
from robustmer.errors import DataError
from robustmer.features.extract import extract
from robustmer.features.video import hog_dim

SMALL = {"n_speakers": 2, "utterances_per_speaker": 4, "n_folds": 2}


@pytest.fixture(scope="module")
def params() -> dict:
    return validate_params(
        {
            "seed": 3,
            "dataset": "builtin",
            "acquire": {"builtin": SMALL},
            "extract": {"workers": 1},
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
        }
    )


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory, params: dict) -> Path:
    out = tmp_path_factory.mktemp("raw") / "builtin"
    generate_corpus(out, params["acquire"]["builtin"], seed=5, workers=1)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, params: dict, raw: Path) -> FeatureStore:
    out = tmp_path_factory.mktemp("features") / "builtin"
    extract(params, raw, out)
    return FeatureStore(out)


def test_store_has_every_feature_with_declared_dims(store: FeatureStore) -> None:
    expected = {
        "audio/egemaps_functionals": ("utterance", 88),
        "audio/egemaps_lld": ("frame", 25),
        "text/minilm": ("utterance", 384),
        "video/face_hog": ("frame", hog_dim(32)),
        "video/face_hog_mean": ("utterance", hog_dim(32)),
    }
    assert store.feature_names() == sorted(expected)
    n = len(store.manifest)
    assert n == 8
    for name, (level, dim) in expected.items():
        meta = store.meta(name)
        values, offsets = store.values(name), store.offsets(name)
        assert (meta.level, meta.dim, values.shape[1], len(offsets)) == (level, dim, dim, n + 1)
        assert np.isfinite(values).all(), name
        lengths = np.diff(offsets)
        assert (lengths == 1).all() if level == "utterance" else (lengths > 1).all(), name
    assert store.meta("audio/egemaps_lld").frame_rate == 100.0
    assert len(store.meta("audio/egemaps_functionals").feature_names) == 88


def test_frame_rates_match_media(store: FeatureStore) -> None:
    manifest = store.manifest
    lld = np.diff(store.offsets("audio/egemaps_lld"))
    video = np.diff(store.offsets("video/face_hog"))
    duration = manifest["gen_duration_s"].to_numpy()
    np.testing.assert_allclose(lld / 100.0, duration, atol=0.05)
    fps = store.meta("video/face_hog").frame_rate
    np.testing.assert_allclose(video / fps, duration, atol=2.0 / fps)


def test_video_mean_is_the_frame_mean(store: FeatureStore) -> None:
    np.testing.assert_allclose(
        store.utterance_matrix("video/face_hog_mean"),
        store.utterance_matrix("video/face_hog"),
        rtol=1e-5,
        atol=1e-6,
    )
    assert store.meta("video/face_hog").params["face_found_rate"] > 0.5


def test_text_embeddings_are_unit_norm_and_differ(store: FeatureStore) -> None:
    emb = store.utterance_matrix("text/minilm")
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert len({tuple(np.round(e, 4)) for e in emb}) == len(emb)


def test_manifest_paths_point_at_media(store: FeatureStore) -> None:
    for path in store.manifest["audio_path"].tolist() + store.manifest["video_path"].tolist():
        assert Path(path).is_file()


def _copy_raw(raw: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "builtin"
    shutil.copytree(raw, dest)
    return dest


def test_corrupt_wav_names_the_file(params: dict, raw: Path, tmp_path: Path) -> None:
    bad = _copy_raw(raw, tmp_path)
    victim = sorted((bad / "audio").glob("*.wav"))[2]
    victim.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(DataError, match=victim.name):
        extract(params, bad, tmp_path / "features")
    assert not (tmp_path / "features").exists()  # nothing half-written


def test_missing_media_file_is_listed(params: dict, raw: Path, tmp_path: Path) -> None:
    bad = _copy_raw(raw, tmp_path)
    victim = sorted((bad / "video").glob("*.mp4"))[0]
    victim.unlink()
    with pytest.raises(DataError, match=f"{victim.name}.*acquire"):
        extract(params, bad, tmp_path / "features")


def test_unreadable_video_names_the_file(params: dict, raw: Path, tmp_path: Path) -> None:
    bad = _copy_raw(raw, tmp_path)
    victim = sorted((bad / "video").glob("*.mp4"))[1]
    victim.write_bytes(b"")
    with pytest.raises(DataError, match=victim.name):
        extract(params, bad, tmp_path / "features")


def test_empty_transcript_gives_zeros(params: dict, raw: Path, tmp_path: Path) -> None:
    from robustmer.features.text import extract_text

    (feat,) = extract_text(["", "   ", "I am thrilled!"], params["extract"]["text"], "cpu")
    vectors = np.concatenate(feat.sequences)
    assert not vectors[:2].any() and np.abs(vectors[2]).sum() > 0


def test_failed_rerun_keeps_the_previous_store(
    params: dict, raw: Path, store: FeatureStore, tmp_path: Path
) -> None:
    out = tmp_path / "features"
    shutil.copytree(store.root, out)
    before = FeatureStore(out).content_hash()
    bad = _copy_raw(raw, tmp_path)
    meta = pd.read_csv(bad / "metadata.csv")
    meta.loc[0, "audio_path"] = "audio/does_not_exist.wav"
    meta.to_csv(bad / "metadata.csv", index=False)
    with pytest.raises(DataError, match="does_not_exist"):
        extract(params, bad, out)
    assert FeatureStore(out).content_hash() == before


def test_missing_metadata_says_run_acquire(params: dict, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="robustmer acquire"):
        extract(params, tmp_path / "nothing", tmp_path / "features")
