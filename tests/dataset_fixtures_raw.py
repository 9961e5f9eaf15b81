"""Tiny stand-ins for real corpora, in the exact layouts their authors distribute.

The adapters are tested on these instead of the real corpora, whose licences forbid copying them
into the project: the file names, folder names and CSV columns are the real ones, the media are
short sine tones and grey 8-frame videos.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
EMODB_LETTERS = "WLEAFTN"
EMODB_SPEAKERS = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
MELD_EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
MELD_HEADER = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)
MELD_CLIP_DIRS = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
TABLE_META = ("file", "emotion", "intensity", "actor", "gender")


def write_wav(path: Path, freq: float = 220.0, seconds: float = 0.5, sr: int = 16000) -> Path:
    """A sine tone; `freq` makes each file's bytes (and sha256) distinct."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def write_mp4(path: Path, shade: int = 128, frames: int = 8, size: int = 64) -> Path:
    """A grey mp4v clip of `frames` frames at 8 fps."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for i in range(frames):
        writer.write(np.full((size, size, 3), (shade + 7 * i) % 256, dtype=np.uint8))
    writer.release()
    return path


def ravdess_name(
    modality: int,
    emotion: int,
    actor: int,
    *,
    channel: int = 1,
    intensity: int = 1,
    statement: int = 1,
    repetition: int = 1,
) -> str:
    ext = "wav" if modality == 3 else "mp4"
    fields = (modality, channel, emotion, intensity, statement, repetition, actor)
    return "-".join(f"{f:02d}" for f in fields) + f".{ext}"


def build_ravdess(
    root: Path,
    actors: Sequence[int] = (1, 2, 3, 4),
    emotions: Sequence[int] = tuple(range(1, 9)),
    modalities: Sequence[int] = (3, 2),
    *,
    song: bool = False,
) -> Path:
    """`Actor_XX/` folders as the speech audio and video zips extract them (optionally song).

    Each actor records every emotion once; the intensity is strong for even emotion codes except
    neutral, the statement alternates with the emotion code.
    """
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        channels = (1, 2) if song else (1,)
        for channel in channels:
            for emotion in emotions:
                if channel == 2 and emotion in (7, 8):  # songs have no disgust or surprised
                    continue
                kw = {
                    "channel": channel,
                    "intensity": 2 if emotion % 2 == 0 and emotion != 1 else 1,
                    "statement": 1 + emotion % 2,
                }
                for modality in modalities:
                    path = folder / ravdess_name(modality, emotion, actor, **kw)
                    if modality == 3:
                        write_wav(path, freq=100.0 + 10 * actor + emotion + 50 * channel)
                    else:
                        write_mp4(path, shade=10 * actor + emotion, frames=4)
    return root


def build_emodb(
    root: Path,
    speakers: Sequence[str] = EMODB_SPEAKERS,
    letters: str = EMODB_LETTERS,
    *,
    subfolder: bool = True,
) -> Path:
    """EmoDB as the download unpacks: `wav/` plus the documentation files beside it."""
    wav_dir = root / "wav" if subfolder else root
    texts = ("a01", "a02", "b01", "b09")
    for s, speaker in enumerate(speakers):
        for e, letter in enumerate(letters):
            name = f"{speaker}{texts[(s + e) % len(texts)]}{letter}{'abcd'[e % 4]}.wav"
            write_wav(wav_dir / name, freq=150.0 + 5 * s + e)
    if subfolder:
        (root / "erkennung.txt").write_text("recognition results\n", encoding="utf-8")
        (root / "lablaut").mkdir(parents=True, exist_ok=True)
    return wav_dir


def meld_rows(n: int, start_dialogue: int = 0, texts: Iterable[str] | None = None) -> list[dict]:
    """`n` utterances, three per dialogue, emotions cycling through MELD's seven."""
    texts = list(texts or [])
    rows = []
    for i in range(n):
        emotion = MELD_EMOTIONS[i % len(MELD_EMOTIONS)]
        sentiment = (
            "neutral" if emotion == "neutral" else "positive" if emotion == "joy" else "negative"
        )
        rows.append(
            {
                "Sr No.": i + 1,
                "Utterance": texts[i] if i < len(texts) else f"Line number {i} isn’t short.",
                "Speaker": ("Chandler", "Monica", "Ross", "Rachel")[i % 4],
                "Emotion": emotion,
                "Sentiment": sentiment,
                "Dialogue_ID": start_dialogue + i // 3,
                "Utterance_ID": i % 3,
                "Season": 1 + i % 9,
                "Episode": 1 + i % 20,
                "StartTime": f"00:16:{i % 60:02d},059",
                "EndTime": f"00:16:{i % 60:02d},731",
            }
        )
    return rows


def write_meld_csv(path: Path, rows: Sequence[dict]) -> Path:
    return write_csv(path, rows, MELD_HEADER)


def build_meld(
    root: Path,
    sizes: tuple[int, int, int] = (9, 4, 6),
    *,
    clips: bool = False,
    clip_root: Path | None = None,
) -> Path:
    """`{train,dev,test}_sent_emo.csv` and, with `clips`, the MELD.Raw clip folders."""
    for split, n in zip(("train", "dev", "test"), sizes, strict=True):
        rows = meld_rows(n)
        write_meld_csv(root / f"{split}_sent_emo.csv", rows)
        if clips:
            folder = (clip_root or root) / MELD_CLIP_DIRS[split]
            for r in rows:
                name = f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4"
                write_mp4(folder / name, shade=r["Sr No."], frames=3)
    return root


def build_folder(
    root: Path,
    speakers: Sequence[str] = ("ann", "bob", "cat", "dan"),
    labels: Sequence[str] = ("sad", "happy", "angry"),
    *,
    speaker_column: bool = True,
    text_column: bool = True,
    extra: dict[str, Sequence[str]] | None = None,
) -> Path:
    """`<speaker>/<n>.wav` files and a labels.csv; `extra` adds columns (one value per row)."""
    rows = []
    for s, speaker in enumerate(speakers):
        for i, label in enumerate(labels):
            rel = f"{speaker}/take_{i}.wav"
            write_wav(root / rel, freq=200.0 + 10 * s + i)
            row = {"file": rel, "label": label}
            if speaker_column:
                row["speaker"] = speaker
            if text_column:
                row["text"] = f"{speaker} says take {i}"
            rows.append(row)
    for column, values in (extra or {}).items():
        for row, value in zip(rows, values, strict=True):
            row[column] = value
    write_labels(root / "labels.csv", rows)
    return root


def write_labels(path: Path, rows: Sequence[dict]) -> Path:
    return write_csv(path, rows, list(dict.fromkeys(k for r in rows for k in r)))


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_ravdess_tables(
    root: Path,
    actors: Sequence[int] = (1, 2, 3, 4),
    emotions: Sequence[int] = (1, 3, 4, 5),
    *,
    audio_dim: int = 4,
    video_dim: int = 3,
    nan_cells: Sequence[tuple[int, int]] = ((0, 1), (2, 1), (5, 0)),
    all_nan_column: bool = False,
    shuffle_video: bool = True,
) -> Path:
    """audio_summary.csv and video_summary.csv: numeric columns first, then the meta columns.

    The audio table names clips `03-...wav`, the video table `01-...mp4` (rows pair on the rest
    of the name) and lists them in another order. Feature value = row index * 10 + column, so a
    test can tell which row landed where; `nan_cells` are (row, column) pairs of the audio table.
    """
    import pandas as pd

    records = [(a, e) for a in actors for e in emotions]
    names = ("intensity", "actor", "gender")

    def meta(prefix: int, ext: str) -> dict[str, list]:
        cols: dict[str, list] = {"file": [], "emotion": []}
        cols |= {n: [] for n in names}
        for a, e in records:
            intensity = 1 if e == 1 else 2
            cols["file"].append(f"{prefix:02d}-01-{e:02d}-{intensity:02d}-01-01-{a:02d}.{ext}")
            cols["emotion"].append(RAVDESS_EMOTIONS[e - 1])
            cols["intensity"].append(intensity)
            cols["actor"].append(a)
            cols["gender"].append("male" if a % 2 else "female")
        return cols

    n = len(records)
    audio = {f"a{j}_mean": [i * 10.0 + j for i in range(n)] for j in range(audio_dim)}
    if all_nan_column:
        audio["cpp_var"] = [float("nan")] * n
    audio |= meta(3, "wav")
    audio_frame = pd.DataFrame(audio)
    for row, col in nan_cells:
        audio_frame.iloc[row, col] = np.nan
    video = {f"AU{j:02d}_mean": [i * 10.0 + j + 0.5 for i in range(n)] for j in range(video_dim)}
    video_frame = pd.DataFrame(video | meta(1, "mp4"))
    if shuffle_video:
        video_frame = video_frame.iloc[::-1]
    root.mkdir(parents=True, exist_ok=True)
    audio_frame.to_csv(root / "audio_summary.csv", index=False)
    video_frame.to_csv(root / "video_summary.csv", index=False)
    return root
