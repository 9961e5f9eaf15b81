"""Generic adapter: reads any media folder with a `labels.csv`, for corpora without their own.

The labels table supplies what a corpus's file names would otherwise: label, speaker, text and
the protocol (a fold or split column, else speaker-independent folds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.data.adapters.raw_layout import (
    LabelRow,
    SkipLog,
    add_media_columns,
    check_labels,
    check_speaker_folds,
    corpus_info,
    option_int,
    resolve_options,
    round_robin_folds,
    source_dir,
    summary,
    write_raw_corpus,
)
from robustmer.data.registry import dataset_info
from robustmer.errors import ConfigError, DataError

AUDIO_EXTENSIONS = (".wav", ".flac")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid"}
_SPLIT_ALIASES |= {"validation": "valid", "test": "test"}

_FOLDER_DEFAULTS: dict[str, Any] = {
    "dataset": "folder",
    "labels": "labels.csv",
    "classes": None,
    "n_folds": 5,
}


def prepare_folder(source: Path, out_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Any media folder with a labels table -> raw layout: for corpora without their own adapter.

    labels.csv: `file` (relative to source; its extension picks audio or video) or explicit
    `audio` / `video` columns, `label`, optional `sample_id`, `speaker` (default: one speaker per
    file, which only suits corpora where speakers cannot leak), `text`, and `fold` or `split`.
    """
    opts = resolve_options("folder", options, _FOLDER_DEFAULTS)
    src = source_dir("folder", source)
    table_path = src / str(opts["labels"])
    table = _read_labels(table_path)
    media_cols = _folder_media_columns(table, table_path)
    rows = [_folder_row(table_path, src, i + 2, rec, media_cols) for i, rec in enumerate(table)]
    frame = pd.DataFrame(rows)
    _check_unique(frame, table_path)
    classes = _folder_classes(opts["classes"], frame, table_path, str(opts["dataset"]))
    frame = _folder_protocol(frame, table_path, opts)
    frame = frame.sort_values("sample_id", kind="stable").reset_index(drop=True)
    media = {m: [Path(p) for p in frame.pop(f"_{m}")] for m in media_cols}
    add_media_columns(frame, media)
    info = corpus_info(
        opts["dataset"],
        "folder",
        classes,
        src,
        frame,
        labels_file=table_path.as_posix(),
        skipped=SkipLog().report(),
    )
    write_raw_corpus(out_dir, frame, info)
    return summary(info)


def _read_labels(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(
            f"folder: labels table {path} is missing; give one with columns file, label "
            "(optional speaker, text, fold or split), or set the option labels"
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    if "label" not in table.columns or not {"file", "audio", "video"} & set(table.columns):
        raise DataError(
            f"folder: {path} needs a label column and a file (or audio / video) column; "
            f"it has {list(table.columns)}"
        )
    if {"fold", "split"} <= set(table.columns):
        raise DataError(f"folder: {path} has both fold and split columns; keep one protocol")
    if table.empty:
        raise DataError(f"folder: {path} has no rows")
    return table.to_dict("records")


def _folder_media_columns(table: list[dict[str, str]], path: Path) -> list[str]:
    """Modalities in the table: the explicit audio/video columns, else the `file` extensions."""
    explicit = [m for m in ("audio", "video") if m in table[0]]
    if explicit:
        return explicit
    kinds = {_media_kind(rec["file"]) for rec in table}
    if None in kinds:
        bad = next(r["file"] for r in table if _media_kind(r["file"]) is None)
        raise DataError(
            f"folder: {path}: {bad!r} is not a known media file (audio: "
            f"{', '.join(AUDIO_EXTENSIONS)}; video: {', '.join(VIDEO_EXTENSIONS)})"
        )
    if len(kinds) > 1:
        raise DataError(
            f"folder: {path} mixes audio and video files in the file column; every utterance "
            "needs the same modalities: use explicit audio and video columns instead"
        )
    return [str(kinds.pop())]


def _media_kind(name: str) -> str | None:
    ext = Path(name).suffix.lower()
    return "audio" if ext in AUDIO_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def _folder_row(
    table: Path, src: Path, line: int, rec: Mapping[str, str], media_cols: Sequence[str]
) -> dict[str, Any]:
    where = f"folder: {table} line {line}"
    media = {}
    for m in media_cols:
        rel = rec.get(m) or (rec.get("file", "") if _media_kind(rec.get("file", "")) == m else "")
        if not rel.strip():
            raise DataError(f"{where}: no {m} file given")
        path = src / rel.strip()
        if not path.is_file():
            raise DataError(f"{where}: {m} file {path} does not exist")
        media[f"_{m}"] = path
    id_source = rec.get("file") or rec.get("audio") or rec.get("video") or ""
    sample_id = rec.get("sample_id", "").strip() or _path_id(id_source.strip())
    label = rec["label"].strip()
    if not label:
        raise DataError(f"{where}: empty label for {sample_id}")
    row: dict[str, Any] = {
        "sample_id": sample_id,
        "speaker": rec.get("speaker", "").strip() or sample_id,
        "label": label,
        "_line": line,
        **media,
    }
    for column in ("text", "fold", "split"):
        if column in rec:
            row[column] = rec[column] if column == "text" else rec[column].strip()
    return row


def _path_id(rel: str) -> str:
    """`a/b/x.wav` -> `a__b__x`: unique as long as the paths are."""
    path = Path(rel)
    return path.with_suffix("").as_posix().replace("/", "__")


def _check_unique(frame: pd.DataFrame, table: Path) -> None:
    columns = ["sample_id"] + [c for c in ("_audio", "_video") if c in frame.columns]
    for column in columns:
        dup = frame[frame[column].duplicated(keep=False)]
        if not dup.empty:
            lines = ", ".join(str(v) for v in dup["_line"].head(5))
            what = "sample id" if column == "sample_id" else f"{column[1:]} file"
            raise DataError(
                f"folder: {table} lines {lines}: duplicate {what} {dup[column].iloc[0]}; every "
                "row must be a distinct utterance"
            )


def _folder_classes(value: Any, frame: pd.DataFrame, table: Path, dataset: str) -> list[str]:
    """The class list: the option `classes`, else the registry's, else the labels found.

    Labels found are checked first (raw_layout.check_labels): without a declared list, a label
    that looks like a typo of a frequent one, or a one-off among frequent ones, is refused
    rather than made a class of its own.
    """
    if value is None:
        value = _registry_classes(dataset)
    if value is not None and (
        not isinstance(value, list) or not value or len(set(value)) != len(value)
    ):
        raise ConfigError(f"folder: option classes must be a list of distinct names, got {value!r}")
    classes = None if value is None else [str(c) for c in value]
    rows = [
        LabelRow(label, table, int(line), sample_id)
        for label, line, sample_id in zip(
            frame["label"], frame["_line"], frame["sample_id"], strict=True
        )
    ]
    check_labels("folder", rows, classes, f"acquire.{dataset}.classes")
    return classes if classes is not None else sorted(frame["label"].unique())


def _registry_classes(dataset: str) -> list[Any] | None:
    """The classes the registry expects for `dataset`, if it is registered and names them."""
    try:
        expected = dataset_info(dataset).expected.get("classes")
    except ConfigError:
        return None
    return list(expected) if expected else None


def _folder_protocol(frame: pd.DataFrame, table: Path, opts: Mapping[str, Any]) -> pd.DataFrame:
    frame = frame.copy()
    if "split" in frame.columns:
        mapped = frame["split"].str.lower().map(_SPLIT_ALIASES)
        if mapped.isna().any():
            first = frame[mapped.isna()].iloc[0]
            raise DataError(
                f"folder: {table} line {first['_line']}: split {first['split']!r} is not one of "
                "train, valid (dev, val), test"
            )
        frame["split"] = mapped
        absent = [s for s in ("train", "test") if not (mapped == s).any()]
        if absent:
            raise DataError(
                f"folder: {table}: no rows in split(s) {absent}; train and test are needed"
            )
    elif "fold" in frame.columns:
        ok = frame["fold"].str.fullmatch(r"\d+")
        if not ok.all():
            first = frame[~ok].iloc[0]
            raise DataError(
                f"folder: {table} line {first['_line']}: fold {first['fold']!r} is not a "
                "non-negative integer"
            )
        frame["fold"] = frame["fold"].astype(int)
        numbers = sorted(frame["fold"].unique())
        if len(numbers) < 2 or numbers != list(range(len(numbers))):
            raise DataError(
                f"folder: {table}: folds {numbers} must be numbered 0, 1, ..., K-1 (K >= 2) "
                "without gaps; renumber the fold column"
            )
    else:
        n_folds = option_int("folder", "n_folds", opts["n_folds"], 2)
        folds = round_robin_folds(frame["speaker"], n_folds, where=f"folder {table}")
        frame["fold"] = frame["speaker"].map(folds).astype(int)
    if "fold" in frame.columns:
        check_speaker_folds(frame, f"folder {table}")
    return frame.drop(columns=["_line"])
