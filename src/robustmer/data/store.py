"""The canonical feature store every dataset adapter writes and every model reads.

Layout of a store folder (one per dataset):

    manifest.parquet                            one row per utterance (see MANIFEST_COLUMNS)
    features/<modality>/<extractor>.values.npy  float32 [sum_T, D], all utterances back to back
    features/<modality>/<extractor>.offsets.npy int64 [N+1]; utterance i is values[o[i]:o[i+1]]
    features/<modality>/<extractor>.json        dims, level, frame rate, extractor version/params
    store.json                                  written last: its presence marks a complete store

Ragged arrays instead of one file per sample: a model loads a whole dataset with two memory
maps per feature, and an utterance-level feature is a frame sequence of length one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from robustmer.errors import DataError
from robustmer.io import atomic_path, read_json, sha256_array, sha256_file, write_json, write_npy

STORE_FORMAT = 1
MANIFEST_COLUMNS = ("sample_id", "speaker", "label", "text", "source")
OPTIONAL_COLUMNS = ("fold", "split", "valence", "arousal", "audio_path", "video_path")
Level = Literal["utterance", "frame"]


# Keys of FeatureMeta.params that record what an extraction run found, not its options.
RUN_RECORD_KEYS = frozenset({"stats", "n_placeholders", "frames", "entry"})


@dataclass
class FeatureMeta:
    """What a feature array holds and how it was made (stored as <extractor>.json)."""

    modality: str
    extractor: str
    level: Level
    dim: int
    frame_rate: float | None = None
    version: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    feature_names: list[str] | None = None
    n_samples: int = 0
    n_frames: int = 0
    sha256: str = ""

    @property
    def name(self) -> str:
        return f"{self.modality}/{self.extractor}"

    def options(self) -> dict[str, Any]:
        """How the feature was extracted: `params` without what one run found (statistics,
        placeholder counts, frame counts), so two stores made the same way compare equal."""
        return {k: v for k, v in self.params.items() if k not in RUN_RECORD_KEYS}


def pack_sequences(
    sequences: Sequence[np.ndarray], dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-utterance `[T_i, D]` arrays into (values `[sum_T, D]`, offsets `[N+1]`)."""
    if dim is None:
        dims = {np.asarray(s).shape[-1] for s in sequences if np.asarray(s).ndim == 2}
        if len(dims) != 1:
            raise DataError(f"sequences have inconsistent or missing feature dims: {sorted(dims)}")
        dim = dims.pop()
    lengths = np.zeros(len(sequences) + 1, dtype=np.int64)
    for i, seq in enumerate(sequences):
        seq = np.asarray(seq)
        if seq.ndim != 2 or seq.shape[1] != dim:
            raise DataError(f"sequence {i} has shape {seq.shape}, expected [T, {dim}]")
        lengths[i + 1] = seq.shape[0]
    offsets = np.cumsum(lengths)
    values = (
        np.concatenate([np.asarray(s, dtype=np.float32) for s in sequences], axis=0)
        if offsets[-1]
        else np.zeros((0, dim), dtype=np.float32)
    )
    return values.astype(np.float32, copy=False), offsets


class StoreWriter:
    """Writes a store folder; every file is written atomically and store.json comes last."""

    def __init__(self, root: str | Path, dataset: str, classes: Sequence[str]):
        self.root = Path(root)
        self.dataset = dataset
        self.classes = list(classes)
        self._features: dict[str, FeatureMeta] = {}
        self._n: int | None = None
        self._manifest_sha = ""
        (self.root / "features").mkdir(parents=True, exist_ok=True)

    def write_manifest(self, manifest: pd.DataFrame) -> None:
        missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
        if missing:
            raise DataError(f"manifest lacks required columns {missing}")
        if "fold" not in manifest.columns and "split" not in manifest.columns:
            raise DataError("manifest needs a `fold` or a `split` column (the dataset's protocol)")
        path = self.root / "manifest.parquet"
        with atomic_path(path, suffix=".parquet") as tmp:
            manifest.reset_index(drop=True).to_parquet(tmp, index=False)
        self._n = len(manifest)
        self._manifest_sha = sha256_file(path)

    def add_feature(
        self,
        meta: FeatureMeta,
        sequences: Sequence[np.ndarray] | None = None,
        *,
        values: np.ndarray | None = None,
        offsets: np.ndarray | None = None,
    ) -> FeatureMeta:
        """Store one feature from per-utterance sequences or from packed (values, offsets)."""
        if sequences is not None:
            values, offsets = pack_sequences(sequences, meta.dim)
        if values is None or offsets is None:
            raise ValueError("give either sequences or values and offsets")
        values = np.asarray(values, dtype=np.float32)
        offsets = np.asarray(offsets, dtype=np.int64)
        if self._n is not None and len(offsets) != self._n + 1:
            raise DataError(
                f"{meta.name}: {len(offsets) - 1} utterances but the manifest has {self._n}"
            )
        if values.ndim != 2 or values.shape[1] != meta.dim or offsets[-1] != len(values):
            raise DataError(
                f"{meta.name}: values {values.shape} / offsets end {offsets[-1]} do not match dim "
                f"{meta.dim}"
            )
        base = self.root / "features" / meta.modality / meta.extractor
        base.parent.mkdir(parents=True, exist_ok=True)
        write_npy(_file(base, ".values.npy"), values)
        write_npy(_file(base, ".offsets.npy"), offsets)
        meta.n_samples = len(offsets) - 1
        meta.n_frames = len(values)
        meta.sha256 = feature_hash(values, offsets)
        write_json(_file(base, ".json"), asdict(meta))
        self._features[meta.name] = meta
        return meta

    def finalize(self, extra: dict[str, Any] | None = None) -> Path:
        if self._n is None:
            raise DataError("write the manifest before finalising the store")
        info = {
            "format": STORE_FORMAT,
            "dataset": self.dataset,
            "classes": self.classes,
            "n_samples": self._n,
            "manifest_sha256": self._manifest_sha,
            "features": {name: m.sha256 for name, m in sorted(self._features.items())},
            **(extra or {}),
        }
        path = self.root / "store.json"
        write_json(path, info)
        return path


class FeatureStore:
    """Read-only view of a store folder; feature arrays are memory-mapped."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "store.json"
        if not info_path.is_file():
            raise DataError(
                f"{self.root}: no store.json, so this is not a complete feature store; "
                "run `robustmer extract` (or `dvc repro extract`) to build it"
            )
        self.info: dict[str, Any] = read_json(info_path)

    @property
    def dataset(self) -> str:
        return str(self.info["dataset"])

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "manifest.parquet")

    def __len__(self) -> int:
        return int(self.info["n_samples"])

    def feature_names(self) -> list[str]:
        return sorted(self.info["features"])

    def modalities(self) -> list[str]:
        """The modalities the store has any feature of (EmoDB: audio only)."""
        return sorted({name.split("/", 1)[0] for name in self.info["features"]})

    def _base(self, name: str) -> Path:
        if name not in self.info["features"]:
            raise DataError(
                f"{self.root}: no feature {name!r} (available: {', '.join(self.feature_names())}); "
                "check the model's `features` in params.yaml"
            )
        return self.root / "features" / name

    def meta(self, name: str) -> FeatureMeta:
        raw = read_json(_file(self._base(name), ".json"))
        return FeatureMeta(**raw)

    def values(self, name: str) -> np.ndarray:
        return np.load(_file(self._base(name), ".values.npy"), mmap_mode="r")

    def offsets(self, name: str) -> np.ndarray:
        return np.load(_file(self._base(name), ".offsets.npy"))

    def sequence(self, name: str, index: int) -> np.ndarray:
        offsets = self.offsets(name)
        return np.asarray(self.values(name)[offsets[index] : offsets[index + 1]])

    def sequences(self, name: str, indices: Sequence[int] | None = None) -> list[np.ndarray]:
        values, offsets = self.values(name), self.offsets(name)
        idx = range(len(offsets) - 1) if indices is None else indices
        return [np.asarray(values[offsets[i] : offsets[i + 1]]) for i in idx]

    def utterance_matrix(self, name: str) -> np.ndarray:
        """`[N, D]`: the feature itself for utterance-level features, the frame mean otherwise."""
        return frame_means(np.asarray(self.values(name)), self.offsets(name))

    def content_hash(self, names: Sequence[str] | None = None) -> str:
        """One hash of the manifest and the chosen features (all by default), for lineage tags."""
        names = self.feature_names() if names is None else sorted(names)
        digest = hashlib.sha256(self.info["manifest_sha256"].encode())
        for name in names:
            self._base(name)
            digest.update(f"{name}={self.info['features'][name]}".encode())
        return digest.hexdigest()


def _file(base: Path, suffix: str) -> Path:
    return base.parent / f"{base.name}{suffix}"


def feature_hash(values: np.ndarray, offsets: np.ndarray) -> str:
    """The hash store.json records per feature (the lineage audit recomputes it)."""
    return hashlib.sha256((sha256_array(values) + sha256_array(offsets)).encode()).hexdigest()


def frame_means(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`[N, D]` float32: each utterance's mean frame (zeros for an empty one); a copy of
    `values` when every utterance has one row (an utterance-level feature)."""
    lengths = np.diff(offsets)
    if np.all(lengths == 1):
        return values.copy()
    sums = np.zeros((len(lengths), values.shape[1]), dtype=np.float64)
    nonempty = lengths > 0
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(values, offsets[:-1][nonempty], axis=0)
    return (sums / np.maximum(lengths, 1)[:, None]).astype(np.float32)
