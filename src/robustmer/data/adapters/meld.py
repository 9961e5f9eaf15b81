"""MELD adapter: reads `{train,dev,test}_sent_emo.csv` and, optionally, the MELD.Raw clip folders.

MELD keeps its official splits (dev -> valid). Its transcripts were once decoded as Windows-1252,
hence `fix_mojibake`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.data.adapters.raw_layout import (
    SPLITS,
    SkipLog,
    add_media_columns,
    corpus_info,
    option_bool,
    option_int,
    resolve_options,
    shortlist,
    source_dir,
    summary,
    write_raw_corpus,
)
from robustmer.errors import ConfigError, DataError

MELD_CLASSES = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
_MELD_CSV = {
    "train": "train_sent_emo.csv",
    "valid": "dev_sent_emo.csv",
    "test": "test_sent_emo.csv",
}
_MELD_CLIP_DIRS = {
    "train": "train_splits",
    "valid": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
_MELD_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
# UTF-8 text once decoded as Windows-1252; the fallback when the cp1252 round trip fails.
_MOJIBAKE = {
    "â€™": "’",
    "â€˜": "‘",
    "â€œ": "“",
    "â€\x9d": "”",
    "â€¦": "…",
    "â€”": "—",
    "â€“": "–",
}
_MOJIBAKE_MARKERS = ("â€", "Ã", "Â")

_MELD_DEFAULTS: dict[str, Any] = {
    "dataset": "meld",
    "clips": None,
    "drop_missing_clips": False,
    "max_per_split": None,
}


def prepare_meld(source: Path, out_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """MELD (`{train,dev,test}_sent_emo.csv`, optional MELD.Raw clip folders) -> raw layout.

    Official splits (dev -> valid); the transcript is the text. Clips are used when the option
    `clips` names their root (relative to source, or a mapping split -> folder) or, by default,
    when the MELD.Raw folders (train_splits, dev_splits_complete, output_repeated_splits_test)
    lie under source (`clips: null`, the default); `clips: false` means text only.
    """
    opts = resolve_options("meld", options, _MELD_DEFAULTS)
    src = source_dir("meld", source)
    limits = _meld_limits(opts["max_per_split"])
    drop_missing = option_bool("meld", "drop_missing_clips", opts["drop_missing_clips"])
    frames = [_meld_split(src, split, limits.get(split)) for split in SPLITS]
    frame = pd.concat(frames, ignore_index=True)
    mojibake_fixed = int(frame.pop("_fixed").sum())

    clip_dirs = _meld_clip_dirs(src, opts["clips"])
    missing = SkipLog()
    if clip_dirs:
        clips = [
            clip_dirs[s] / f"dia{d}_utt{u}.mp4"
            for s, d, u in zip(
                frame["split"], frame["dialogue_id"], frame["utterance_id"], strict=True
            )
        ]
        present = [p.is_file() for p in clips]
        for ok, path, sid in zip(present, clips, frame["sample_id"], strict=True):
            if not ok:
                missing.add(path, f"clip of {sid} is missing")
        if missing and not drop_missing:
            raise DataError(
                f"meld: {len(missing)} clip(s) are missing "
                f"({shortlist([p for p, _ in missing.entries])}); extract MELD.Raw completely, "
                "set clips: false for text only, or drop_missing_clips: true to leave those "
                "utterances out"
            )
        frame = frame[present].reset_index(drop=True)
        kept = [p for p, ok in zip(clips, present, strict=True) if ok]
        add_media_columns(frame, {"video": kept})
    for split in SPLITS:
        if not (frame["split"] == split).any():
            raise DataError(f"meld: split {split} has no utterances left under {src}")

    info = corpus_info(
        opts["dataset"],
        "meld",
        MELD_CLASSES,
        src,
        frame,
        csv_files={s: _MELD_CSV[s] for s in SPLITS},
        clip_dirs={s: p.as_posix() for s, p in clip_dirs.items()},
        max_per_split=limits,
        mojibake_fixed=mojibake_fixed,
        skipped=missing.report(),
    )
    write_raw_corpus(out_dir, frame, info)
    return summary(info)


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as Windows-1252 ("â€™" -> "’"); clean text is unchanged."""
    if not any(marker in text for marker in _MOJIBAKE_MARKERS):
        return text
    try:
        return text.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        for bad, good in _MOJIBAKE.items():
            text = text.replace(bad, good)
        return text


def _meld_limits(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if isinstance(value, int) and not isinstance(value, bool):
        return {s: option_int("meld", "max_per_split", value, 1) for s in SPLITS}
    if isinstance(value, Mapping) and set(value) <= set(SPLITS):
        return {s: option_int("meld", f"max_per_split.{s}", n, 1) for s, n in value.items()}
    raise ConfigError(
        f"meld: option max_per_split must be an integer or a mapping from {list(SPLITS)} to "
        f"integers, got {value!r}"
    )


def _meld_split(src: Path, split: str, limit: int | None) -> pd.DataFrame:
    path = src / _MELD_CSV[split]
    if not path.is_file():
        raise DataError(
            f"meld: {path} is missing; the source folder must hold train_sent_emo.csv, "
            "dev_sent_emo.csv and test_sent_emo.csv as distributed with MELD"
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"meld: {path} is not UTF-8 ({exc}); re-save it as UTF-8") from exc
    lacking = [c for c in _MELD_COLUMNS if c not in table.columns]
    if lacking:
        raise DataError(f"meld: {path} lacks column(s) {lacking}; is this a MELD *_sent_emo.csv?")
    if limit is not None:
        table = table.iloc[:limit]
    rows, seen = [], set()
    for i, rec in enumerate(table.to_dict("records")):
        line = i + 2  # header is line 1
        try:
            dia, utt = int(rec["Dialogue_ID"]), int(rec["Utterance_ID"])
        except ValueError as exc:
            raise DataError(
                f"meld: {path} line {line}: Dialogue_ID/Utterance_ID must be integers, got "
                f"{rec['Dialogue_ID']!r}/{rec['Utterance_ID']!r}"
            ) from exc
        sample_id = f"{split}_dia{dia}_utt{utt}"
        emotion = rec["Emotion"].strip().lower()
        if emotion not in MELD_CLASSES:
            close = difflib.get_close_matches(emotion, MELD_CLASSES, n=1, cutoff=0.8)
            raise DataError(
                f"meld: {path} line {line}: unknown emotion {rec['Emotion']!r} of {sample_id} "
                f"(known: {', '.join(MELD_CLASSES)}). "
                + (f"Did you mean {close[0]!r}? " if close else "")
                + "MELD's seven emotions are fixed: correct the row from the official CSV"
            )
        if sample_id in seen:
            raise DataError(f"meld: {path} line {line}: duplicate sample id {sample_id}")
        seen.add(sample_id)
        text = fix_mojibake(rec["Utterance"])
        rows.append(
            {
                "sample_id": sample_id,
                "speaker": rec["Speaker"].strip(),
                "label": emotion,
                "split": split,
                "text": text,
                "sentiment": rec["Sentiment"].strip().lower(),
                "dialogue_id": dia,
                "utterance_id": utt,
                "_fixed": text != rec["Utterance"],
            }
        )
    if not rows:
        raise DataError(f"meld: {path} has no utterances")
    return pd.DataFrame(rows).sort_values(["dialogue_id", "utterance_id"], kind="stable")


def _meld_clip_dirs(src: Path, value: Any) -> dict[str, Path]:
    """Split -> clip folder, or {} for text only."""
    if value is False:
        return {}
    if value is None or value == "auto":
        found = any((src / d).is_dir() for d in _MELD_CLIP_DIRS.values())
        return {s: src / d for s, d in _MELD_CLIP_DIRS.items()} if found else {}
    if isinstance(value, str | os.PathLike):
        root = src / value
        if not root.is_dir():
            raise DataError(f"meld: clip folder {root} (option clips) does not exist")
        return {s: root / d for s, d in _MELD_CLIP_DIRS.items()}
    if isinstance(value, Mapping) and set(value) == set(SPLITS):
        return {s: src / value[s] for s in SPLITS}
    raise ConfigError(
        "meld: option clips must be null (auto), false, a folder holding the MELD.Raw split "
        f"folders, or a mapping from {list(SPLITS)} to clip folders; got {value!r}"
    )
