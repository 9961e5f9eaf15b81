"""Extractors on real media from the built-in generator: shapes, dims, bad-file errors.

The first half runs the whole extract stage into a store; the second drives the extractor
classes (openSMILE, log-mel, sentence, face HOG) directly and checks they give the store's
numbers, so moving the stage onto the classes cannot change a feature.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustmer.config import validate_params
from robustmer.data.builtin import generate_corpus
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError, DataError
from robustmer.features.audio import OpenSmileExtractor
from robustmer.features.base import MediaError
from robustmer.features.extract import extract
from robustmer.features.logmel import LogMelExtractor, mel_filterbank
from robustmer.features.media import load_audio, uniform_indices, video_fps
from robustmer.features.text import SentenceExtractor
from robustmer.features.video import FaceHogExtractor, hog_dim

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
    params = store.meta("video/face_hog").params
    assert params.get("stats", params)["face_found_rate"] > 0.5


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
    from robustmer.features.text import SentenceExtractor

    ext = SentenceExtractor("minilm", {"model": "minilm"})
    ext.setup()
    out = ext.extract(["", "   ", "I am thrilled!"])
    vectors = np.concatenate([o[""] for o in out])
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


# --------------------------------------------------------------------------------------------
# The extractor classes behind the registry
# --------------------------------------------------------------------------------------------


def _paths(store: FeatureStore, column: str) -> list[Path]:
    return [Path(p) for p in store.manifest[column]]


def _per_item(store: FeatureStore, name: str) -> list[np.ndarray]:
    values, offsets = store.values(name), store.offsets(name)
    return [values[a:b] for a, b in itertools.pairwise(offsets)]


def test_opensmile_class_gives_the_store_numbers(store: FeatureStore) -> None:
    ext = OpenSmileExtractor("egemaps", {"kind": "opensmile"})
    ext.setup()
    func, lld = ext.outputs()
    assert (func.suffix, func.level, func.dim, func.frame_rate) == (
        "_functionals",
        "utterance",
        88,
        None,
    )
    assert (lld.suffix, lld.level, lld.dim, lld.frame_rate) == ("_lld", "frame", 25, 100.0)
    assert func.feature_names == store.meta("audio/egemaps_functionals").feature_names
    out = ext.extract(_paths(store, "audio_path")[:3])
    for item, f, low in zip(
        out,
        _per_item(store, "audio/egemaps_functionals"),
        _per_item(store, "audio/egemaps_lld"),
        strict=False,
    ):
        assert set(item) == {"_functionals", "_lld"}
        np.testing.assert_array_equal(item["_functionals"], f)
        np.testing.assert_array_equal(item["_lld"], low)
    assert ext.cache_key() == {
        "kind": "opensmile",
        "params": {"feature_set": "eGeMAPSv02", "vad": False},
        "version": ext.version(),
    }


def test_opensmile_compare_set_and_vad_option(store: FeatureStore) -> None:
    path = _paths(store, "audio_path")[0]
    compare = OpenSmileExtractor("compare", {"feature_set": "ComParE_2016"})
    compare.setup()
    assert [o.dim for o in compare.outputs()] == [6373, 65]
    (item,) = compare.extract([path])
    assert item["_functionals"].shape == (1, 6373) and item["_lld"].shape[1] == 65
    trimmed = OpenSmileExtractor("egemaps", {"vad": True})
    trimmed.setup()
    (item,) = trimmed.extract([path])
    full = _per_item(store, "audio/egemaps_lld")[0]
    assert 0 < len(item["_lld"]) <= len(full) and np.isfinite(item["_functionals"]).all()
    assert "silero-vad" in trimmed.version()


def test_logmel_frames_dims_and_a_tone_in_the_right_band(store: FeatureStore) -> None:
    ext = LogMelExtractor("logmel", {})
    ext.setup()
    (spec,) = ext.outputs()
    assert (spec.suffix, spec.level, spec.dim, spec.frame_rate) == ("", "frame", 64, 100.0)
    path = _paths(store, "audio_path")[0]
    (item,) = ext.extract([path])
    n = len(load_audio(path))
    assert item[""].shape == (1 + n // 160, 64) and item[""].dtype == np.float32
    assert np.isfinite(item[""]).all()
    rate = 16000
    tone = np.sin(2 * np.pi * 1000 * np.arange(rate) / rate).astype(np.float32)
    frames = ext.logmel(tone)
    fb = mel_filterbank(64, 512, rate)
    peak_band = int(np.argmax(fb[round(1000 / (rate / 512))]))
    assert int(np.bincount(frames[5:-5].argmax(axis=1)).argmax()) == peak_band
    assert np.all(fb.max(axis=0) > 0.5)  # no empty filter at 64 bands / 512-point FFT
    coarse = LogMelExtractor("fbank", {"n_mels": 40, "win_ms": 32, "hop_ms": 20})
    coarse.setup()
    assert coarse.logmel(tone).shape == (1 + rate // 320, 40)
    assert coarse.outputs()[0].frame_rate == 50.0


def test_sentence_class_batched_gives_the_store_numbers(store: FeatureStore) -> None:
    ext = SentenceExtractor("minilm", {"kind": "sentence", "batch_size": 3})
    assert ext.batch_size == 3 and ext.outputs()[0].dim == 384
    ext.setup()
    texts = store.manifest["text"].tolist()
    rows = []
    for start in range(0, len(texts), ext.batch_size):  # as the stage batches transcripts
        rows += [item[""] for item in ext.extract(texts[start : start + ext.batch_size])]
    np.testing.assert_allclose(
        np.concatenate(rows), store.utterance_matrix("text/minilm"), atol=2e-6
    )
    empty = ext.extract(["", None, "  "])
    assert all(item[""].shape == (1, 384) and not item[""].any() for item in empty)


def test_face_hog_class_gives_the_store_numbers(store: FeatureStore) -> None:
    ext = FaceHogExtractor("face_hog", {"kind": "face_hog"})
    ext.setup()
    paths = _paths(store, "video_path")[:3]
    ext.probe(paths)
    frame, mean = ext.outputs()
    dim = hog_dim(32)
    assert (frame.suffix, frame.level, frame.dim) == ("", "frame", dim)
    assert frame.frame_rate == store.meta("video/face_hog").frame_rate == video_fps(paths[0])
    assert (mean.suffix, mean.level, mean.dim, mean.frame_rate) == ("_mean", "utterance", dim, None)
    out = ext.extract(paths)
    for item, seq, avg in zip(
        out,
        _per_item(store, "video/face_hog"),
        _per_item(store, "video/face_hog_mean"),
        strict=False,
    ):
        np.testing.assert_array_equal(item[""], seq)
        np.testing.assert_array_equal(item["_mean"], avg)
    stats = ext.stats()
    assert stats["clips"] == 3 and stats["frames"] == sum(len(i[""]) for i in out)
    assert stats["face_found_rate"] > 0.5


def test_face_hog_uniform_frames_and_steps(store: FeatureStore) -> None:
    path = _paths(store, "video_path")[0]
    every = _per_item(store, "video/face_hog")[0]
    sampled = FaceHogExtractor("face_hog", {"frames": 6, "detect_every": 1})
    sampled.setup()
    sampled.probe([path])
    (item,) = sampled.extract([path])
    assert item[""].shape == (6, hog_dim(32)) and sampled.outputs()[0].frame_rate is None
    dense = FaceHogExtractor("face_hog", {"detect_every": 1})
    dense.setup()
    (full,) = dense.extract([path])
    np.testing.assert_array_equal(item[""], full[""][uniform_indices(len(every), 6)])
    stepped = FaceHogExtractor("face_hog", {"frame_step": 2, "crop_size": 48})
    stepped.setup()
    stepped.probe([path])
    (item,) = stepped.extract([path])
    assert item[""].shape == (-(-len(every) // 2), hog_dim(48))
    assert stepped.outputs()[0].frame_rate == video_fps(path) / 2


def test_options_are_checked_by_name() -> None:
    with pytest.raises(ConfigError, match=r"extract.video.face_hog: unknown option.*'fps'"):
        FaceHogExtractor("face_hog", {"fps": 25})
    with pytest.raises(ConfigError, match=r"extract.video.face_hog.frames = -1"):
        FaceHogExtractor("face_hog", {"frames": -1})
    with pytest.raises(ConfigError, match=r"extract.audio.egemaps.feature_set = 'IS09'"):
        OpenSmileExtractor("egemaps", {"feature_set": "IS09"})
    with pytest.raises(ConfigError, match=r"extract.audio.fbank.n_mels"):
        LogMelExtractor("fbank", {"n_mels": 0})
    with pytest.raises(ConfigError, match=r"extract.text.minilm.model = '/nowhere'"):
        SentenceExtractor("minilm", {"model": "/nowhere"}).setup()


def test_media_extractors_raise_media_errors_naming_the_file(
    store: FeatureStore, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.wav"
    wav = _paths(store, "audio_path")[0]
    truncated.write_bytes(wav.read_bytes()[: wav.stat().st_size // 3])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    silent_video = _paths(store, "video_path")[0]  # the built-in mp4 has no sound
    smile = OpenSmileExtractor("egemaps", {})
    smile.setup()
    logmel = LogMelExtractor("logmel", {})
    logmel.setup()
    hog = FaceHogExtractor("face_hog", {})
    hog.setup()
    for ext, path, reason in [
        (smile, truncated, "truncated"),
        (logmel, truncated, "truncated"),
        (logmel, silent_video, "no audio stream"),
        (hog, empty, "empty"),
        (hog, tmp_path / "gone.mp4", "does not exist"),
    ]:
        with pytest.raises(MediaError, match=rf"{path.name}: .*{reason}") as info:
            ext.extract([path])
        assert info.value.item == str(path)
