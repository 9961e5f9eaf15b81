"""The built-in synthetic corpus: determinism, layout, media, labels, cues and signal sanity."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from robustmer import CLASSES_BUILTIN
from robustmer.data.acquire import acquire
from robustmer.data.builtin import generate_corpus
from robustmer.data.builtin.transcripts import cue_phrases
from robustmer.errors import ConfigError

CFG = {
    "n_speakers": 4,
    "utterances_per_speaker": 8,
    "n_folds": 3,
    "sample_rate": 16000,
    "min_duration_s": 1.6,
    "max_duration_s": 2.8,
    "video_fps": 12,
    "video_size": 128,
    "ambiguous_text_fraction": 0.25,
}
SEED = 3
STRENGTHS = ("strong", "mild", "weak")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTMER_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("builtin")
    return out, generate_corpus(out, CFG, SEED, workers=1)


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """Enough utterances per class for the acoustic and visual sanity checks."""
    out = tmp_path_factory.mktemp("builtin_larger")
    cfg = {**CFG, "n_speakers": 4, "utterances_per_speaker": 16}
    return out, generate_corpus(out, cfg, SEED + 1, workers=2)


def _frames(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return np.stack(frames)


def _hashes(out: Path) -> dict[str, str]:
    return json.loads((out / "corpus.json").read_text())["sha256"]


def test_layout_and_metadata(corpus: tuple[Path, pd.DataFrame]) -> None:
    out, meta = corpus
    n = CFG["n_speakers"] * CFG["utterances_per_speaker"]
    assert len(meta) == n
    on_disk = pd.read_csv(out / "metadata.csv", keep_default_na=False)
    assert list(on_disk.columns[:11]) == [
        "sample_id",
        "speaker",
        "gender",
        "fold",
        "label",
        "valence",
        "arousal",
        "text",
        "audio_path",
        "video_path",
        "source",
    ]
    assert all(c.startswith("gen_") for c in on_disk.columns[11:])
    assert on_disk["sample_id"].tolist() == meta["sample_id"].tolist()
    assert meta["sample_id"].is_unique and meta["sample_id"].iloc[0] == "spk00_u000"
    assert (meta["source"] == "builtin").all()
    assert set(meta["gender"]) == {"F", "M"}
    info = json.loads((out / "corpus.json").read_text())
    assert info["n_samples"] == n and info["seed"] == SEED
    assert info["classes"] == list(CLASSES_BUILTIN) and info["cfg"] == CFG
    paths = sorted([*meta["audio_path"], *meta["video_path"]])
    assert sorted(info["sha256"]) == paths
    assert all((out / p).is_file() for p in paths)
    assert not [p for p in out.rglob(".*") if p.is_file()], "temporary files left behind"


def test_classes_balanced_per_speaker(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, meta = corpus
    counts = meta.groupby("speaker")["label"].value_counts().unstack(fill_value=0)
    assert list(counts.columns.sort_values()) == sorted(CLASSES_BUILTIN)
    assert (counts == CFG["utterances_per_speaker"] // len(CLASSES_BUILTIN)).all().all()


def test_folds_are_speaker_disjoint_and_all_used(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, meta = corpus
    assert (meta.groupby("speaker")["fold"].nunique() == 1).all()
    per_fold = meta.groupby("fold")["speaker"].nunique()
    assert sorted(per_fold.index) == list(range(CFG["n_folds"]))
    assert per_fold.max() - per_fold.min() <= 1


def test_valence_arousal_match_classes(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, meta = corpus
    assert meta[["valence", "arousal"]].abs().le(1).all().all()
    signs = {"happy": (1, 1), "angry": (-1, 1), "sad": (-1, -1)}
    for label, (sv, sa) in signs.items():
        rows = meta[meta["label"] == label]
        assert (np.sign(rows["valence"]) == sv).all() and (np.sign(rows["arousal"]) == sa).all()
    neutral = meta[meta["label"] == "neutral"]
    assert neutral[["valence", "arousal"]].abs().le(0.2).all().all()
    assert (neutral["gen_intensity"] == 0).all()


def test_audio_files(corpus: tuple[Path, pd.DataFrame]) -> None:
    out, meta = corpus
    for rel in meta["audio_path"]:
        info = sf.info(str(out / rel))
        assert info.samplerate == CFG["sample_rate"] and info.channels == 1
        assert info.subtype == "PCM_16"
        assert CFG["min_duration_s"] - 1e-3 <= info.duration <= CFG["max_duration_s"] + 1e-3


def test_video_files(corpus: tuple[Path, pd.DataFrame]) -> None:
    out, meta = corpus
    for rel, duration in zip(meta["video_path"][:8], meta["gen_duration_s"][:8], strict=True):
        frames = _frames(out / rel)
        side = CFG["video_size"]
        assert frames.shape[1:] == (side, side, 3)
        assert abs(len(frames) - duration * CFG["video_fps"]) <= 1


def test_haar_cascade_finds_the_face(corpus: tuple[Path, pd.DataFrame]) -> None:
    out, meta = corpus
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = total = 0
    for rel in meta["video_path"][::4]:
        for frame in _frames(out / rel)[::3]:
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            faces = cascade.detectMultiScale(gray, 1.1, 4, minSize=(24, 24))
            found += len(faces) > 0
            total += 1
    assert found / total > 0.8


def test_transcript_cues(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, meta = corpus

    def has_cue(text: str, label: str, strengths: tuple[str, ...] = STRENGTHS) -> bool:
        return any(c in text.lower() for s in strengths for c in cue_phrases(label, s))

    for row in meta.itertuples():
        if row.gen_text_cue in STRENGTHS:
            assert has_cue(row.text, row.label, (row.gen_text_cue,)), row.text
        elif row.gen_text_cue == "none":
            assert not any(has_cue(row.text, c) for c in CLASSES_BUILTIN), row.text
        else:
            assert row.gen_text_cue == "contradictory"
            assert row.gen_text_cue_class != row.label
            assert has_cue(row.text, row.gen_text_cue_class, ("mild",)), row.text
    ambiguous = meta["gen_text_cue"].isin(["none", "contradictory"]).groupby(meta["speaker"])
    expected = round(CFG["ambiguous_text_fraction"] * CFG["utterances_per_speaker"])
    assert (ambiguous.sum() == expected).all()


def test_same_seed_same_bytes_and_worker_count_irrelevant(
    corpus: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    out, meta = corpus
    again = generate_corpus(tmp_path / "again", CFG, SEED, workers=2)
    pd.testing.assert_frame_equal(meta, again)
    first, second = _hashes(out), _hashes(tmp_path / "again")
    wavs = [p for p in first if p.endswith(".wav")]
    assert all(first[p] == second[p] for p in wavs)
    for rel in meta["video_path"][:4]:
        np.testing.assert_array_equal(_frames(out / rel), _frames(tmp_path / "again" / rel))


def test_different_seed_differs(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, meta = corpus
    other = generate_corpus(tmp_path / "other", CFG, SEED + 100)
    first, second = _hashes(out), _hashes(tmp_path / "other")
    assert sorted(first) == sorted(second)
    assert all(first[p] != second[p] for p in second)
    assert other["text"].tolist() != meta["text"].tolist()
    assert other["label"].tolist() != meta["label"].tolist()


def test_stale_files_are_removed(tmp_path: Path) -> None:
    cfg = {**CFG, "n_speakers": 2, "n_folds": 2, "utterances_per_speaker": 4}
    (tmp_path / "audio").mkdir()
    stale = tmp_path / "audio" / "spk99_u000.wav"
    stale.write_bytes(b"old")
    generate_corpus(tmp_path, cfg, SEED)
    assert not stale.exists()
    assert len(list((tmp_path / "audio").iterdir())) == 8


def _active_rms_db(path: Path) -> float:
    x, _ = sf.read(str(path))
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames**2).mean(1))
    return float(20 * np.log10(np.mean(rms[rms > 0.1 * rms.max()])))


def test_voice_energy_follows_arousal(larger: tuple[Path, pd.DataFrame]) -> None:
    out, meta = larger
    expressive = meta[meta["gen_strength_audio"] > 0.3]
    level = {
        label: np.mean([_active_rms_db(out / p) for p in rows["audio_path"]])
        for label, rows in expressive.groupby("label")
    }
    assert min(level["angry"], level["happy"]) > level["sad"] + 3


def _mouth_curvature(path: Path) -> float:
    """Quadratic coefficient of the dark mouth pixels: < 0 for lifted corners (a smile)."""
    values = []
    for frame in _frames(path):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(float)
        side = gray.shape[0]
        region = gray[int(0.66 * side) : int(0.84 * side), int(0.32 * side) : int(0.68 * side)]
        ys, xs = np.nonzero(region < 0.72 * np.median(region))
        if len(xs) >= 10:
            values.append(np.polyfit(xs - xs.mean(), ys, 2)[0])
    return float(np.mean(values))


def test_face_smiles_when_happy(larger: tuple[Path, pd.DataFrame]) -> None:
    out, meta = larger
    expressive = meta[meta["gen_strength_video"] > 0.3]
    curvature = {
        label: np.mean([_mouth_curvature(out / p) for p in rows["video_path"]])
        for label, rows in expressive.groupby("label")
        if label in ("happy", "sad")
    }
    assert curvature["happy"] < 0 < curvature["sad"]


def test_acquire_dispatch(tmp_path: Path) -> None:
    cfg = {**CFG, "n_speakers": 2, "n_folds": 2, "utterances_per_speaker": 4}
    params = {
        "seed": 1,
        "dataset": "builtin",
        "acquire": {"builtin": cfg},
        "extract": {"workers": 1},
    }
    assert acquire(params, tmp_path / "raw") == tmp_path / "raw"
    assert (tmp_path / "raw" / "corpus.json").is_file()
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; known datasets: builtin"):
        acquire({**params, "dataset": "nope"}, tmp_path / "nope")


def test_bad_cfg_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_folds"):
        generate_corpus(tmp_path, {**CFG, "n_speakers": 2, "n_folds": 3}, SEED)
    with pytest.raises(ConfigError, match="min_duration_s"):
        generate_corpus(tmp_path, {**CFG, "min_duration_s": 3.0}, SEED)
