"""RAVDESS adapter: reads the distributed `Actor_XX/MM-VV-EE-II-SS-RR-AA.{wav,mp4}` files.

The recording's identity is in its file name, so the name parser lives here and the RAVDESS
feature-table adapter (`feature_tables`) reuses it to give the same sample ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.data.adapters.raw_layout import (
    SkipLog,
    add_media_columns,
    check_speaker_folds,
    corpus_info,
    option_bool,
    option_int,
    resolve_options,
    round_robin_folds,
    shortlist,
    source_dir,
    summary,
    write_raw_corpus,
)
from robustmer.errors import ConfigError, DataError
from robustmer.io import sha256_file

RAVDESS_CLASSES = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)

RAVDESS_STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
_RAVDESS_CODES = r"(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})"  # MM-VV-EE-II-SS-RR-AA
_RAVDESS_NAME = re.compile("^" + _RAVDESS_CODES + r"\.(\w+)$")
_RAVDESS_STEM = re.compile("^" + _RAVDESS_CODES + "$")
_RAVDESS_MODALITY = {1: "audio-video", 2: "video-only", 3: "audio-only"}
_RAVDESS_CHANNEL = {1: "speech", 2: "song"}
_RAVDESS_INTENSITY = {1: "normal", 2: "strong"}
_RAVDESS_ACTOR_DIR = re.compile(r"^Actor_(\d+)$", re.IGNORECASE)


_RAVDESS_DEFAULTS: dict[str, Any] = {
    "dataset": "ravdess",
    "channels": ["speech"],
    "merge_calm": False,
    "n_folds": 6,
    "text": False,
    "skip_invalid": False,
    "modalities": None,
    "drop_incomplete": False,
}


def prepare_ravdess(source: Path, out_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """RAVDESS (`Actor_XX/MM-VV-EE-II-SS-RR-AA.{wav,mp4}`, any nesting) -> raw corpus layout.

    One row per recording (fields 2-7 of the name): audio from the audio-only .wav (modality 03),
    video from the video-only .mp4 (02), else from the full audio-video .mp4 (01); the .mp4's
    sound track is not used as audio because the audio extractors read .wav files. Folds are
    actor-independent and dealt by gender (odd actors male) so every fold has both genders.
    """
    opts = resolve_options("ravdess", options, _RAVDESS_DEFAULTS)
    src = source_dir("ravdess", source)
    channels = _ravdess_channels(opts["channels"])
    n_folds = option_int("ravdess", "n_folds", opts["n_folds"], 2)
    merge_calm = option_bool("ravdess", "merge_calm", opts["merge_calm"])
    with_text = option_bool("ravdess", "text", opts["text"])
    skip_invalid = option_bool("ravdess", "skip_invalid", opts["skip_invalid"])
    drop_incomplete = option_bool("ravdess", "drop_incomplete", opts["drop_incomplete"])

    skipped = SkipLog()
    recordings, other_channel = _ravdess_scan(src, channels, skip_invalid, skipped)
    if not recordings:
        raise DataError(
            f"ravdess: no RAVDESS recordings of channel(s) {channels} under {src}; expected "
            "files named MM-VV-EE-II-SS-RR-AA.wav/.mp4 (e.g. Actor_01/03-01-05-01-02-01-01.wav), "
            "extracted from the distributed zip archives"
            + (f"; left out: {shortlist([p for p, _ in skipped.entries])}" if skipped else "")
        )
    modalities = _ravdess_modalities(opts["modalities"], recordings)
    recordings, incomplete = _ravdess_complete(recordings, modalities, drop_incomplete, src)

    classes = [c for c in RAVDESS_CLASSES if not (merge_calm and c == "calm")]
    rows = []
    for rec_id, rec in sorted(recordings.items(), key=lambda kv: (kv[1]["actor"], kv[0])):
        label = RAVDESS_CLASSES[rec["emotion"] - 1]
        row = {
            "sample_id": rec_id,
            "speaker": f"actor_{rec['actor']:02d}",
            "label": "neutral" if merge_calm and label == "calm" else label,
            "emotion": label,
            "intensity": _RAVDESS_INTENSITY[rec["intensity"]],
            "statement": rec["statement"],
            "repetition": rec["repetition"],
            "channel": _RAVDESS_CHANNEL[rec["channel"]],
            "gender": "male" if rec["actor"] % 2 else "female",
        }
        if with_text:
            row["text"] = RAVDESS_STATEMENTS[rec["statement"]]
        row["_audio"], row["_video"] = rec.get(3), rec.get(2, rec.get(1))
        rows.append(row)
    frame = pd.DataFrame(rows)
    genders = dict(zip(frame["speaker"], frame["gender"], strict=True))
    folds = round_robin_folds(frame["speaker"], n_folds, strata=genders, where=f"ravdess {src}")
    frame["fold"] = frame["speaker"].map(folds).astype(int)
    check_speaker_folds(frame, f"ravdess {src}")
    media = {m: list(frame[f"_{m}"]) for m in modalities}
    frame = frame.drop(columns=["_audio", "_video"])
    add_media_columns(frame, media)

    info = corpus_info(
        opts["dataset"],
        "ravdess",
        classes,
        src,
        frame,
        channels=channels,
        merge_calm=merge_calm,
        skipped=skipped.report(),
        excluded_other_channel=other_channel,
        dropped_incomplete=incomplete.report(),
        fold_assignment="actors sorted by (gender, number), dealt round-robin",
    )
    write_raw_corpus(out_dir, frame, info)
    return summary(info)


def _ravdess_channels(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or any(n not in ("speech", "song") for n in names):
        raise ConfigError(
            f"ravdess: option channels must be a list from [speech, song], got {value!r}"
        )
    return [c for c in ("speech", "song") if c in names]


def ravdess_stem_codes(stem: str) -> list[int] | None:
    """The seven codes of a RAVDESS name without its extension (`03-01-05-01-02-01-01`), or None."""
    match = _RAVDESS_STEM.match(stem)
    return [int(g) for g in match.groups()] if match else None


def _ravdess_fields(path: Path) -> tuple[dict[str, int] | None, str]:
    """Parsed name fields, or None and why the file is not a RAVDESS recording at all."""
    match = _RAVDESS_NAME.match(path.name)
    if not match:
        return None, "name is not MM-VV-EE-II-SS-RR-AA.ext (seven two-digit fields)"
    keys = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
    return dict(zip(keys, (int(g) for g in match.groups()[:7]), strict=True)), ""


def _ravdess_problem(path: Path, f: Mapping[str, int]) -> str:
    """Why a well-formed name carries impossible values ("" when it is fine)."""
    limits = {
        "modality": 3,
        "channel": 2,
        "emotion": 8,
        "intensity": 2,
        "statement": 2,
        "repetition": 2,
        "actor": 24,
    }
    for key, top in limits.items():
        if not 1 <= f[key] <= top:
            what = " (unknown label)" if key == "emotion" else ""
            return f"{key} field {f[key]:02d} is outside 01-{top:02d}{what}"
    ext = path.suffix.lower()
    expected = ".wav" if f["modality"] == 3 else ".mp4"
    if ext != expected:
        kind = _RAVDESS_MODALITY[f["modality"]]
        return f"modality {f['modality']:02d} ({kind}) should be a {expected} file"
    folder = _RAVDESS_ACTOR_DIR.match(path.parent.name)
    if folder and int(folder.group(1)) != f["actor"]:
        return f"lies in {path.parent.name} but its actor field is {f['actor']:02d}"
    return ""


def _ravdess_scan(
    src: Path, channels: Sequence[str], skip_invalid: bool, skipped: SkipLog
) -> tuple[dict[str, dict[str, Any]], int]:
    """Recording id -> parsed fields and {modality code: path}; also the other channel's count."""
    recordings: dict[str, dict[str, Any]] = {}
    wanted = {code for code, name in _RAVDESS_CHANNEL.items() if name in channels}
    other_channel = 0
    for path in _visible_files(src):
        fields, why = _ravdess_fields(path)
        if fields is None:
            skipped.add(path, why)
            continue
        if path.suffix.lower() not in (".wav", ".mp4"):
            skipped.add(path, "not a RAVDESS media file (.wav or .mp4)")
            continue
        problem = _ravdess_problem(path, fields)
        if problem:
            if not skip_invalid:
                raise DataError(
                    f"ravdess: {path}: {problem}; fix or remove the file, or set the option "
                    "skip_invalid: true to leave such files out"
                )
            skipped.add(path, problem)
            continue
        if fields["channel"] not in wanted:
            other_channel += 1
            continue
        rec_id = path.stem[3:]
        rec = recordings.setdefault(rec_id, {k: v for k, v in fields.items() if k != "modality"})
        previous = rec.get(fields["modality"])
        if previous is None:
            rec[fields["modality"]] = path
        elif sha256_file(previous) == sha256_file(path):
            skipped.add(path, f"identical copy of {previous.as_posix()}")
        else:
            raise DataError(
                f"ravdess: {previous} and {path} are two different files for the same recording; "
                "keep one copy of the corpus under the source folder"
            )
    return recordings, other_channel


def _ravdess_modalities(value: Any, recordings: Mapping[str, Mapping[Any, Any]]) -> list[str]:
    found = []
    if any(3 in rec for rec in recordings.values()):
        found.append("audio")
    if any(1 in rec or 2 in rec for rec in recordings.values()):
        found.append("video")
    if value is None:
        return found
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or any(n not in ("audio", "video") for n in names):
        raise ConfigError(
            f"ravdess: option modalities must be a list from [audio, video], got {value!r}"
        )
    return [m for m in ("audio", "video") if m in names]


def _ravdess_complete(
    recordings: dict[str, dict[str, Any]], modalities: Sequence[str], drop: bool, src: Path
) -> tuple[dict[str, dict[str, Any]], SkipLog]:
    """Keep recordings that have every chosen modality: extraction needs a file in every row."""
    need = {"audio": (3,), "video": (2, 1)}
    dropped = SkipLog()
    kept: dict[str, dict[str, Any]] = {}
    for rec_id, rec in sorted(recordings.items()):
        lacking = [m for m in modalities if not any(code in rec for code in need[m])]
        if lacking:
            dropped.add(rec_id, f"no {' or '.join(lacking)} file")
        else:
            kept[rec_id] = rec
    if dropped and not drop:
        raise DataError(
            f"ravdess: {len(dropped)} recording(s) under {src} lack a modality the others have "
            f"({shortlist([f'{p}: {r}' for p, r in dropped.entries])}); extract the missing "
            f"archives, choose the option modalities (e.g. [audio]), or set drop_incomplete: "
            "true to leave them out"
        )
    if not kept:
        raise DataError(f"ravdess: no recording under {src} has all of {list(modalities)}")
    return kept, dropped


def _visible_files(root: Path) -> list[Path]:
    """Files under root, sorted; dot files and dot folders (.DS_Store, .git) are not media."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
