"""RAVDESS summary tables (one row of utterance-level features per clip) -> canonical store.

`audio_summary.csv` and `video_summary.csv` describe the same clips with acoustic and facial
statistics; their last columns are `file, emotion, intensity, actor, gender`. The two tables name
a clip by different files (the leading modality field and the extension differ), so rows pair on
the name without them, which is also the sample id `VV-EE-II-SS-RR-AA` that `prepare_ravdess`
gives the same recording.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.adapters.ravdess import RAVDESS_CLASSES, ravdess_stem_codes
from robustmer.data.adapters.raw_layout import (
    check_speaker_folds,
    option_bool,
    option_int,
    resolve_options,
    round_robin_folds,
)
from robustmer.data.store import FeatureMeta, StoreWriter
from robustmer.errors import DataError

ADAPTER = "ravdess_tables"
VERSION = f"{ADAPTER}/1"
META_COLUMNS = ("file", "emotion", "intensity", "actor", "gender")
IMPUTATION = (
    "median of each column over all stored rows, computed without labels and identical for "
    "every fold, so it cannot carry label information into the test folds"
)
_DEFAULTS: dict[str, Any] = {
    "dataset": "ravdess_features",  # the registry's name for this pack
    "n_folds": 6,
    "inner_join": False,
    "audio_table": "audio_summary.csv",
    "video_table": "video_summary.csv",
}
# Names the tables (or other copies of them) use for the eight RAVDESS emotions.
_EMOTIONS = {name: name for name in RAVDESS_CLASSES} | {
    "happiness": "happy",
    "sadness": "sad",
    "anger": "angry",
    "fear": "fearful",
    "disgusted": "disgust",
    "surprise": "surprised",
}
_INTENSITY = {1: "normal", 2: "strong"}


def files_ravdess_tables(source: Path, options: Mapping[str, Any]) -> list[Path]:
    """The two tables convert reads; a missing one is a DataError naming the expected layout."""
    opts = resolve_options(ADAPTER, options, _DEFAULTS)
    source = Path(source).absolute()
    paths = [source / str(opts["audio_table"]), source / str(opts["video_table"])]
    missing = [p.as_posix() for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{ADAPTER}: {', '.join(missing)} missing; the source folder must hold "
            f"{opts['audio_table']} and {opts['video_table']} (feature columns, then file, "
            "emotion, intensity, actor, gender)"
        )
    return paths


def convert_ravdess_tables(
    source: Path, out_dir: Path, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Write a complete store: features audio/summary and video/summary, actor-independent folds.

    NaNs are imputed with the column median over all stored rows (label-free, see IMPUTATION);
    a column with no value at all is dropped. Both are recorded in the feature's params.
    """
    opts = resolve_options(ADAPTER, options, _DEFAULTS)
    n_folds = option_int(ADAPTER, "n_folds", opts["n_folds"], 2)
    inner_join = option_bool(ADAPTER, "inner_join", opts["inner_join"])
    audio_path, video_path = files_ravdess_tables(source, opts)
    audio, video = _read_table(audio_path), _read_table(video_path)
    keys, unmatched = _join_keys(audio, video, audio_path, video_path, inner_join)
    audio, video = audio.loc[keys], video.loc[keys]

    manifest = _manifest(audio, str(opts["dataset"]), n_folds, audio_path)
    features = [_feature(audio, "audio", audio_path), _feature(video, "video", video_path)]
    classes = [c for c in RAVDESS_CLASSES if c in set(manifest["label"])]
    # Everything is checked before the first write, so a DataError leaves out_dir untouched.
    writer = StoreWriter(out_dir, str(opts["dataset"]), classes)
    writer.write_manifest(manifest)
    offsets = np.arange(len(manifest) + 1, dtype=np.int64)  # one row per utterance
    metas = [writer.add_feature(meta, values=values, offsets=offsets) for meta, values in features]
    extra = {
        "adapter": ADAPTER,
        "kind": "features",
        "protocol": "speaker_folds",
        "n_folds": n_folds,
        "source": Path(source).absolute().as_posix(),
        "tables": {"audio": audio_path.name, "video": video_path.name},
        "unmatched": unmatched,
        "fold_assignment": "actors sorted by (gender, number), dealt round-robin",
    }
    writer.finalize(extra)
    counts = manifest["label"].value_counts()
    return {
        "dataset": str(opts["dataset"]),
        "n_samples": len(manifest),
        "n_speakers": int(manifest["speaker"].nunique()),
        "label_counts": {c: int(counts[c]) for c in classes},
        "dims": {m.name: m.dim for m in metas},
        "imputed": {m.name: int(sum(m.params["imputed"].values())) for m in metas},
        "unmatched": {k: len(v) for k, v in unmatched.items()},
    }


def _read_table(path: Path) -> pd.DataFrame:
    """The table indexed by recording key, with parsed name fields checked against its columns."""
    table = pd.read_csv(path)
    lacking = [c for c in META_COLUMNS if c not in table.columns]
    if lacking:
        raise DataError(f"{ADAPTER}: {path} lacks column(s) {lacking}; expected {META_COLUMNS}")
    if table.empty:
        raise DataError(f"{ADAPTER}: {path} has no rows")
    keys, emotions, actors = [], [], []
    for i, rec in enumerate(table[list(META_COLUMNS)].to_dict("records")):
        where = f"{ADAPTER}: {path} line {i + 2}"
        fields = ravdess_stem_codes(Path(str(rec["file"])).stem)
        if fields is None:
            raise DataError(f"{where}: file {rec['file']!r} is not named MM-VV-EE-II-SS-RR-AA.ext")
        emotion = _EMOTIONS.get(str(rec["emotion"]).strip().lower())
        if emotion is None:
            raise DataError(
                f"{where}: unknown emotion {rec['emotion']!r} (known: {', '.join(_EMOTIONS)})"
            )
        if not 1 <= fields[2] <= len(RAVDESS_CLASSES) or RAVDESS_CLASSES[fields[2] - 1] != emotion:
            raise DataError(
                f"{where}: emotion {rec['emotion']!r} disagrees with the emotion code "
                f"{fields[2]:02d} in {rec['file']}; the table rows are misaligned"
            )
        if _as_int(rec["actor"]) != fields[6]:
            raise DataError(
                f"{where}: actor {rec['actor']} disagrees with the actor code {fields[6]:02d} "
                f"in {rec['file']}"
            )
        keys.append("-".join(f"{f:02d}" for f in fields[1:]))
        emotions.append(emotion)
        actors.append(fields[6])
    table.index = pd.Index(keys, name="key")
    duplicated = table.index[table.index.duplicated()].unique()
    if len(duplicated):
        raise DataError(
            f"{ADAPTER}: {path}: recording(s) {', '.join(duplicated[:5])} appear more than once"
        )
    table["_label"], table["_actor"] = emotions, actors
    return table


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _join_keys(
    audio: pd.DataFrame, video: pd.DataFrame, audio_path: Path, video_path: Path, inner: bool
) -> tuple[list[str], dict[str, list[str]]]:
    """Sorted keys in both tables; keys in one table only are an error unless `inner`."""
    only = {
        "audio_only": sorted(set(audio.index) - set(video.index)),
        "video_only": sorted(set(video.index) - set(audio.index)),
    }
    if (only["audio_only"] or only["video_only"]) and not inner:
        parts = [
            f"{len(v)} only in {p.name} ({', '.join(v[:5])}{' ...' if len(v) > 5 else ''})"
            for v, p in ((only["audio_only"], audio_path), (only["video_only"], video_path))
            if v
        ]
        raise DataError(
            f"{ADAPTER}: the tables do not describe the same clips: {'; '.join(parts)}; fix the "
            "tables or set the option inner_join: true to keep the clips in both"
        )
    keys = sorted(set(audio.index) & set(video.index))
    if not keys:
        raise DataError(f"{ADAPTER}: {audio_path} and {video_path} share no recording")
    return keys, only


def _manifest(table: pd.DataFrame, dataset: str, n_folds: int, path: Path) -> pd.DataFrame:
    actors = table["_actor"].astype(int)
    speakers = [f"actor_{a:02d}" for a in actors]
    genders = ["male" if a % 2 else "female" for a in actors]
    folds = round_robin_folds(
        speakers,
        n_folds,
        strata=dict(zip(speakers, genders, strict=True)),
        where=f"{ADAPTER}: {path}",
    )
    manifest = pd.DataFrame(
        {
            "sample_id": list(table.index),
            "speaker": speakers,
            "label": list(table["_label"]),
            "text": "",
            "source": dataset,
            "fold": np.array([folds[s] for s in speakers], dtype=np.int64),
            "intensity": [_INTENSITY.get(_as_int(v) or 0, str(v)) for v in table["intensity"]],
            "gender": genders,
        }
    )
    check_speaker_folds(manifest, f"{ADAPTER}: {path}")
    return manifest


def _feature(table: pd.DataFrame, modality: str, path: Path) -> tuple[FeatureMeta, np.ndarray]:
    """FeatureMeta and packed values of one table's numeric columns, NaNs imputed."""
    candidates = [c for c in table.columns if c not in META_COLUMNS and not c.startswith("_")]
    numeric = [c for c in candidates if pd.api.types.is_numeric_dtype(table[c])]
    ignored = [c for c in candidates if c not in numeric]
    values = table[numeric].to_numpy(dtype=np.float64)
    if np.isinf(values).any():
        col = numeric[int(np.nonzero(np.isinf(values).any(axis=0))[0][0])]
        raise DataError(f"{ADAPTER}: {path}: column {col} holds infinite values; fix the table")
    missing = np.isnan(values)
    empty = missing.all(axis=0)
    keep = ~empty
    kept = [c for c, k in zip(numeric, keep, strict=True) if k]
    if not kept:
        raise DataError(f"{ADAPTER}: {path} has no numeric feature column with values")
    values, missing = values[:, keep], missing[:, keep]
    medians = np.nanmedian(values, axis=0)
    values = np.where(missing, medians[None, :], values)
    params = {
        "table": path.name,
        "imputation": IMPUTATION,
        "imputed": {c: int(n) for c, n in zip(kept, missing.sum(axis=0), strict=True) if n},
        "dropped_all_nan": [c for c, e in zip(numeric, empty, strict=True) if e],
        "ignored_non_numeric": ignored,
    }
    meta = FeatureMeta(
        modality=modality,
        extractor="summary",
        level="utterance",
        dim=len(kept),
        version=VERSION,
        params=params,
        feature_names=kept,
    )
    return meta, values.astype(np.float32)
