"""The pandas tables the validation gate checks, computed from a feature store without GX.

Great Expectations checks columns of a table, but the store holds ragged arrays. So the gate first
summarises the store into small tables, one row per thing a failure should name:

    samples   one row per utterance: manifest columns + per feature `<feature>.n_frames`,
              `<feature>.n_nonfinite` (NaN/inf count) and `<feature>.max_abs` (largest finite |x|);
              with a `regression` target column also `regression_finite` (False for a labelled
              sample whose target is NaN/inf)
    features  one row per feature: declared vs actual dims, offsets invariants, sample counts,
              placeholder rows (bad media stored as zeros: recorded, counted, all-zero)
    speakers  one row per speaker: how many folds it appears in (only with a `fold` column)
    classes   one row per declared class: how many samples carry it

The per-sample statistics are reduced frame-wise in chunks and then per utterance with
`np.*.reduceat` over the offsets, so a store with 100k+ utterances is summarised in seconds and a
memory-mapped array is never loaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.store import MANIFEST_COLUMNS, FeatureStore
from robustmer.features.extract import read_placeholders

# Manifest columns that must exist; `text` may be null (a corpus without transcripts).
REQUIRED_COLUMNS: tuple[str, ...] = MANIFEST_COLUMNS
NOT_NULL_COLUMNS: tuple[str, ...] = tuple(c for c in MANIFEST_COLUMNS if c != "text")
PROTOCOL_COLUMNS: tuple[str, ...] = ("fold", "split")
REGRESSION_COLUMN = "regression"  # float target of `task: regression` models (MOSI/MOSEI)
REGRESSION_FINITE = "regression_finite"
LEVELS: tuple[str, ...] = ("utterance", "frame")
# Elements per chunk when reducing values frame-wise (64 MiB of float32).
_CHUNK_ELEMENTS = 1 << 24

STAT_SUFFIXES: tuple[str, ...] = ("n_frames", "n_nonfinite", "max_abs")

_SAMPLE_COLUMNS = (*REQUIRED_COLUMNS, *PROTOCOL_COLUMNS, REGRESSION_COLUMN)
_FEATURE_COLUMNS = (
    "feature",
    "level",
    "readable",
    "declared_dim",
    "actual_dim",
    "n_offsets",
    "expected_n_offsets",
    "first_offset",
    "min_offset_step",
    "last_offset",
    "n_value_rows",
    "meta_n_samples",
    "manifest_n_samples",
    "store_n_samples",
    "offsets_valid",
    "error",
    "n_placeholders",
    "meta_placeholders",
    "placeholder_fraction",
    "placeholders_zero",
)


def protocol_column(columns: Any) -> str:
    """`fold` (speaker-independent CV) when present, else `split` (a fixed protocol)."""
    return "fold" if "fold" in columns else "split"


_INT_FEATURE_COLUMNS = (
    "declared_dim",
    "actual_dim",
    "n_offsets",
    "expected_n_offsets",
    "first_offset",
    "min_offset_step",
    "last_offset",
    "n_value_rows",
    "meta_n_samples",
    "manifest_n_samples",
    "store_n_samples",
    "n_placeholders",
    "meta_placeholders",
)


def stat_column(feature: str, stat: str) -> str:
    """Name of a per-sample statistic column, e.g. `audio/egemaps.n_nonfinite`."""
    return f"{feature}.{stat}"


@dataclass
class StoreTables:
    """Everything the expectations run on, plus what the gate needs to phrase failures."""

    samples: pd.DataFrame
    features: pd.DataFrame
    speakers: pd.DataFrame | None
    classes: pd.DataFrame
    feature_levels: dict[str, str]
    manifest_columns: list[str]

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    def frame(self, table: str) -> pd.DataFrame:
        """A table by the name its suite uses (samples, features, speakers, classes)."""
        frame = getattr(self, table, None)
        if not isinstance(frame, pd.DataFrame):
            raise KeyError(f"no table {table!r}")
        return frame

    def samples_of_speakers(self, speakers: list[Any], limit: int = 20) -> list[str]:
        """Sample ids of the given speakers (to name the samples behind a fold leak)."""
        wanted = {str(s) for s in speakers}
        rows = self.samples[self.samples["speaker"].astype(str).isin(wanted)]
        return [str(s) for s in rows["sample_id"].head(limit)]


@dataclass
class _FeatureArrays:
    values: np.ndarray | None
    offsets: np.ndarray | None
    error: str = ""


def build_tables(store: FeatureStore) -> StoreTables:
    """Summarise `store` into the tables the suites check."""
    manifest = store.manifest
    n = len(manifest)
    samples = manifest[[c for c in manifest.columns if c in _SAMPLE_COLUMNS]].copy()
    samples = samples.reset_index(drop=True)
    # A missing required column becomes an all-null one, so the not-null check names it.
    for column in (*REQUIRED_COLUMNS, protocol_column(manifest.columns)):
        if column not in samples.columns:
            samples[column] = pd.Series([None] * n, dtype=object)
    if REGRESSION_COLUMN in samples.columns:
        samples[REGRESSION_COLUMN] = pd.to_numeric(samples[REGRESSION_COLUMN], errors="coerce")
        unlabelled = samples["label"].astype(str).to_numpy() == ""  # needs no target
        finite = np.isfinite(samples[REGRESSION_COLUMN].to_numpy(dtype=np.float64))
        samples[REGRESSION_FINITE] = finite | unlabelled
    feature_rows: list[dict[str, Any]] = []
    placeholders = read_placeholders(store.root)
    ids = {str(s): i for i, s in enumerate(manifest["sample_id"])} if n else {}
    levels: dict[str, str] = {}
    stat_columns: dict[str, np.ndarray] = {}
    for name in store.feature_names():
        meta = _read_meta(store, name)
        arrays = _read_arrays(store, name)
        row = _structure_row(name, meta, arrays, n, len(store))
        row.update(_placeholder_row(name, meta, arrays, row["offsets_valid"], placeholders, ids))
        feature_rows.append(row)
        levels[name] = str(row["level"] or "")
        stats = _sample_stats(arrays, n) if row["offsets_valid"] else None
        for stat in STAT_SUFFIXES:
            col = stat_column(name, stat)
            if stats is None:
                # Broken offsets: nothing per sample is meaningful; the features table fails.
                stat_columns[col] = np.full(n, np.nan)
            else:
                stat_columns[col] = stats[stat]
    if stat_columns:
        samples = pd.concat([samples, pd.DataFrame(stat_columns)], axis=1)
    features = pd.DataFrame(feature_rows, columns=list(_FEATURE_COLUMNS))
    # Nullable integers: a count that could not be read stays null instead of turning the whole
    # column into floats.
    features = features.astype({c: "Int64" for c in _INT_FEATURE_COLUMNS})
    return StoreTables(
        samples=samples,
        features=features,
        speakers=_speaker_table(manifest),
        classes=_class_table(manifest, store.classes),
        feature_levels=levels,
        manifest_columns=list(manifest.columns),
    )


def _placeholder_row(
    name: str,
    meta: dict[str, Any],
    arrays: _FeatureArrays,
    offsets_valid: bool,
    record: pd.DataFrame,
    ids: dict[str, int],
) -> dict[str, Any]:
    """Placeholder rows of a feature: as many in the store's record (placeholders.parquet) as
    its metadata counts, a small enough share, and each one a single zero frame."""
    rows = record[record["feature"] == name]
    n_meta = (meta.get("params") or {}).get("n_placeholders", 0) if not meta.get("error") else None
    zero = True
    if len(rows) and offsets_valid:
        values, offsets = arrays.values, arrays.offsets
        assert values is not None and offsets is not None
        for sample_id in rows["sample_id"]:
            i = ids.get(str(sample_id))
            if i is None or offsets[i + 1] - offsets[i] != 1 or np.any(values[offsets[i]]):
                zero = False
    return {
        "n_placeholders": len(rows),
        "meta_placeholders": None if n_meta is None else int(n_meta),
        "placeholder_fraction": len(rows) / max(len(ids), 1),
        "placeholders_zero": bool(zero),
    }


def _read_meta(store: FeatureStore, name: str) -> dict[str, Any]:
    try:
        return dict(vars(store.meta(name)))
    except (OSError, ValueError, TypeError) as exc:
        return {"error": f"meta unreadable: {exc}"}


def _read_arrays(store: FeatureStore, name: str) -> _FeatureArrays:
    try:
        return _FeatureArrays(store.values(name), store.offsets(name))
    except (OSError, ValueError) as exc:
        return _FeatureArrays(None, None, f"arrays unreadable: {exc}")


def _structure_row(
    name: str, meta: dict[str, Any], arrays: _FeatureArrays, n: int, store_n: int
) -> dict[str, Any]:
    """One features-table row.

    A quantity that could not be read is None (null), so only the `readable` check fails for a
    missing or corrupt file instead of every check that uses it; -1 marks an array of the wrong
    rank (readable, but not `[sum_T, D]` values / `[N+1]` offsets).
    """
    values, offsets = arrays.values, arrays.offsets
    meta_ok = not meta.get("error")
    readable = values is not None and offsets is not None and meta_ok
    actual_dim = n_rows = n_offsets = first = last = min_step = None
    if values is not None:
        actual_dim = int(values.shape[1]) if values.ndim == 2 else -1
        n_rows = int(values.shape[0]) if values.ndim >= 1 else -1
    if offsets is not None:
        n_offsets = len(offsets) if offsets.ndim == 1 else -1
        if offsets.ndim == 1 and len(offsets):
            first, last = int(offsets[0]), int(offsets[-1])
            min_step = int(np.diff(offsets).min()) if len(offsets) > 1 else 0
    offsets_valid = bool(
        readable
        and actual_dim is not None
        and actual_dim >= 0
        and n_offsets == n + 1
        and first == 0
        and min_step is not None
        and min_step >= 0
        and last == n_rows
    )
    return {
        "feature": name,
        "level": str(meta["level"]) if meta_ok else None,
        "readable": bool(readable),
        "declared_dim": int(meta["dim"]) if meta_ok else None,
        "actual_dim": actual_dim,
        "n_offsets": n_offsets,
        "expected_n_offsets": n + 1,
        "first_offset": first,
        "min_offset_step": min_step,
        "last_offset": last,
        "n_value_rows": n_rows,
        "meta_n_samples": int(meta["n_samples"]) if meta_ok else None,
        "manifest_n_samples": n,
        "store_n_samples": store_n,
        "offsets_valid": offsets_valid,
        "error": " ".join(filter(None, [str(meta.get("error", "")), arrays.error])),
    }


def _sample_stats(arrays: _FeatureArrays, n: int) -> dict[str, np.ndarray]:
    """Per-utterance frame count, NaN/inf count and largest finite |value| (valid offsets only)."""
    values, offsets = arrays.values, arrays.offsets
    assert values is not None and offsets is not None
    lengths = np.diff(offsets)
    frame_nonfinite, frame_max_abs = _frame_stats(values)
    n_nonfinite = np.zeros(n, dtype=np.int64)
    max_abs = np.zeros(n, dtype=np.float64)
    nonempty = lengths > 0
    if nonempty.any():
        starts = offsets[:-1][nonempty]
        # Empty utterances are dropped from `starts`, so each segment ends at the next non-empty
        # start, which is exactly its own end.
        n_nonfinite[nonempty] = np.add.reduceat(frame_nonfinite, starts)
        max_abs[nonempty] = np.maximum.reduceat(frame_max_abs, starts)
    return {"n_frames": lengths.astype(np.int64), "n_nonfinite": n_nonfinite, "max_abs": max_abs}


def _frame_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: number of non-finite entries and the largest finite |value| (0 if none)."""
    n_rows, dim = values.shape
    nonfinite = np.zeros(n_rows, dtype=np.int64)
    max_abs = np.zeros(n_rows, dtype=np.float64)
    if dim == 0:
        return nonfinite, max_abs
    step = max(1, _CHUNK_ELEMENTS // dim)
    for start in range(0, n_rows, step):
        chunk = np.asarray(values[start : start + step])
        finite = np.isfinite(chunk)
        nonfinite[start : start + step] = dim - finite.sum(axis=1)
        max_abs[start : start + step] = np.where(finite, np.abs(chunk), 0).max(axis=1)
    return nonfinite, max_abs


def _speaker_table(manifest: pd.DataFrame) -> pd.DataFrame | None:
    """Folds per speaker; None when the protocol is a fixed split (no speaker-independent CV)."""
    if "fold" not in manifest.columns or "speaker" not in manifest.columns:
        return None
    rows = manifest[["speaker", "fold"]].dropna()
    rows = rows[rows["fold"] >= 0]  # -1: in no test fold (an unlabelled pool)
    grouped = rows.groupby("speaker", sort=True)["fold"]
    return pd.DataFrame(
        {
            "speaker": grouped.size().index.astype(str),
            "n_folds": grouped.nunique().to_numpy(dtype=np.int64),
            "folds": grouped.agg(lambda f: ",".join(sorted(map(str, pd.unique(f))))).to_numpy(),
            "n_samples": grouped.size().to_numpy(dtype=np.int64),
        }
    )


def _class_table(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Sample count of every declared class (0 for a class with no samples at all)."""
    counts = manifest["label"].value_counts() if "label" in manifest.columns else pd.Series()
    return pd.DataFrame(
        {
            "label": [str(c) for c in classes],
            "n_samples": [int(counts.get(c, 0)) for c in classes],
        }
    )
