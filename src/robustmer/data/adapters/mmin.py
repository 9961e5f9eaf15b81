"""IEMOCAP / MSP-IMPROV feature packs in the MMIN layout -> the canonical feature store.

The pack (shared by the MMIN/IF-MMIN authors with licence holders) looks like::

    A/comparE.h5  V/denseface.h5  L/bert_large.h5     one HDF5 file per modality
    A/comparE_mean_std.h5                             per-fold training statistics (audio)
    target/<cv>/{trn,val,tst}_label.npy               one-hot [N, C] (or class index [N])
    target/<cv>/{trn,val,tst}_int2name.npy            utterance ids, [N, 1] or [N] byte strings

Each HDF5 file is keyed by utterance id. A key holds either the frame array `[T, D]` directly or
a group with that array inside (`feat` or `feature`, or the group's only dataset): both shapes
occur in packs in the wild, so both are read the same way.

The class order lives in the pack (its documentation / the code that wrote the one-hot labels),
not in this adapter: pass it as option `classes` after reading the pack's documentation. The
default `[ang, hap, neu, sad]` is only the order most IEMOCAP packs use; the one-hot width must
equal `len(classes)` or the conversion stops.

Options (all optional):
    dataset         dataset name written to the store and the manifest `source` (default iemocap)
    features        {modality: path inside the pack}; merged over the defaults
                    {audio: A/comparE.h5, video: V/denseface.h5, text: L/bert_large.h5};
                    a modality mapped to null is left out
    normalisation   {modality: path}; default: `<stem>_mean_std.h5` beside each feature file,
                    used when present (an explicitly named file must exist)
    classes         class names in one-hot column order (default [ang, hap, neu, sad])
    n_folds         folds to read, target/1..n_folds (default: every numbered target/ folder)
    expected_folds  stop unless the pack has exactly this many folds (registry: 10 / 12)
    dims            {modality: feature dim}, checked for every utterance
    speaker_pattern regex with one group that extracts the speaker from an utterance id
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.store import FeatureMeta, StoreWriter
from robustmer.errors import DataError
from robustmer.io import atomic_path, sha256_file

DEFAULT_FEATURES = {"audio": "A/comparE.h5", "video": "V/denseface.h5", "text": "L/bert_large.h5"}
DEFAULT_CLASSES = ("ang", "hap", "neu", "sad")
ROLES = {"trn": "train", "val": "val", "tst": "test"}
SHORT_FRAMES = 5  # TextCNN-style encoders need at least this many frames (kernel width)
ADAPTER = "mmin"
LAYOUT = (
    "expected the MMIN layout: A/comparE.h5, V/denseface.h5, L/bert_large.h5 (option "
    "`features`), A/comparE_mean_std.h5 and target/<cv>/{trn,val,tst}_{label,int2name}.npy"
)

_IEMOCAP = re.compile(r"^(Ses\d+)[FM]_.*_([FM])[^_]*$")
_MSP = re.compile(r"^MSP-IMPROV-[^-]+-([FM]\d+)(?:-|$)")


def files_mmin(source: Path, options: Mapping[str, Any]) -> list[Path]:
    """Every file the conversion reads: feature HDF5s, normalisation HDF5s and fold targets."""
    source = Path(source)
    features = _feature_files(source, options)
    norms = _norm_files(source, features, options)
    folds = _folds(source, options)
    files = list(features.values()) + list(norms.values())
    files += [p for fold in folds for p in _target_files(source, fold)]
    missing = [p for p in files if not p.is_file()]
    if missing:
        shown = ", ".join(str(p.relative_to(source)) for p in missing[:5])
        raise DataError(
            f"{source}: {len(missing)} file(s) of the feature pack are missing ({shown}); {LAYOUT}"
        )
    return files


def convert_mmin(source: Path, out_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Write the pack as a canonical store: manifest, frame features, protocol, normalisation."""
    source, out_dir = Path(source), Path(out_dir)
    files_mmin(source, options)
    dataset = str(options.get("dataset", "iemocap"))
    classes = [str(c) for c in options.get("classes", DEFAULT_CLASSES)]
    folds = _folds(source, options)
    targets = {fold: _read_fold(source, fold, classes) for fold in folds}
    manifest, protocol = _manifest(targets, classes, dataset, options)
    ids = manifest["sample_id"].tolist()

    writer = StoreWriter(out_dir, dataset, classes)
    writer.write_manifest(manifest)
    with atomic_path(out_dir / "protocol.parquet", suffix=".parquet") as tmp:
        protocol.to_parquet(tmp, index=False)

    dims = {str(k): int(v) for k, v in (options.get("dims") or {}).items()}
    features = _feature_files(source, options)
    norm_files = _norm_files(source, features, options)
    summary: dict[str, Any] = {"n_samples": len(ids), "n_folds": len(folds), "features": {}}
    normalisation: dict[str, Any] = {}
    for modality, path in features.items():
        values, offsets = _read_h5_feature(path, ids, dims.get(modality))
        lengths = np.diff(offsets)
        meta = FeatureMeta(
            modality,
            path.stem,
            "frame",
            int(values.shape[1]),
            version=f"{ADAPTER}-hdf5",
            params={"file": path.relative_to(source).as_posix()},
        )
        writer.add_feature(meta, values=values, offsets=offsets)
        summary["features"][meta.name] = {
            "dim": meta.dim,
            "frames": int(offsets[-1]),
            "empty": int((lengths == 0).sum()),
            f"shorter_than_{SHORT_FRAMES}": int((lengths < SHORT_FRAMES).sum()),
        }
        if modality in norm_files:
            normalisation[modality] = _copy_normalisation(
                norm_files[modality], source, out_dir, modality, values, offsets, protocol, ids
            )
    summary["normalisation"] = normalisation
    writer.finalize(
        extra={
            "adapter": ADAPTER,
            "protocol": "fold_table",
            "n_folds": len(folds),
            "folds": folds,
            "normalisation": normalisation,
        }
    )
    summary["labels"] = manifest["label"].value_counts().sort_index().to_dict()
    return summary


def speaker_of(name: str, pattern: str | None = None) -> str:
    """Speaker id of an utterance: IEMOCAP session+gender, MSP-IMPROV speaker field, or prefix."""
    if pattern:
        match = re.search(pattern, name)
        if not match or not match.groups():
            raise DataError(
                f"option speaker_pattern {pattern!r} does not match utterance {name!r} (or has "
                "no group); give a regex with one group that captures the speaker"
            )
        return match.group(1)
    if m := _IEMOCAP.match(name):
        return m.group(1) + m.group(2)
    if m := _MSP.match(name):
        return m.group(1)
    return name.split("_", 1)[0]


# --- pack layout ----------------------------------------------------------------------------


def _feature_files(source: Path, options: Mapping[str, Any]) -> dict[str, Path]:
    merged: dict[str, Any] = dict(DEFAULT_FEATURES)
    merged.update(dict(options.get("features") or {}))
    out = {}
    for modality, rel in merged.items():
        if modality not in ("audio", "video", "text"):
            raise DataError(f"option features: unknown modality {modality!r} (audio/video/text)")
        if rel:
            out[modality] = source / str(rel)
    if not out:
        raise DataError("option features selects no modality; name at least one HDF5 file")
    return out


def _norm_files(
    source: Path, features: Mapping[str, Path], options: Mapping[str, Any]
) -> dict[str, Path]:
    given = dict(options.get("normalisation") or {})
    out = {}
    for modality, path in features.items():
        if given.get(modality):
            out[modality] = source / str(given[modality])  # explicit: must exist
        else:
            guess = path.with_name(f"{path.stem}_mean_std.h5")
            if guess.is_file():
                out[modality] = guess
    return out


def _folds(source: Path, options: Mapping[str, Any]) -> list[int]:
    target = source / "target"
    if not target.is_dir():
        raise DataError(f"{source}: no target/ folder with the per-fold labels; {LAYOUT}")
    found = sorted(int(p.name) for p in target.iterdir() if p.is_dir() and p.name.isdigit())
    n_folds = options.get("n_folds")
    folds = list(range(1, int(n_folds) + 1)) if n_folds else found
    if not folds:
        raise DataError(f"{target}: no numbered fold folders (1, 2, ...); {LAYOUT}")
    absent = sorted(set(folds) - set(found))
    if absent:
        raise DataError(f"{target}: fold folder(s) {absent} are missing; {LAYOUT}")
    expected = options.get("expected_folds")
    if expected is not None and len(folds) != int(expected):
        raise DataError(
            f"{target}: {len(folds)} fold folders but this dataset has {expected} "
            f"speaker-independent folds; copy the whole target/ folder of the pack"
        )
    return folds


def _target_files(source: Path, fold: int) -> list[Path]:
    base = source / "target" / str(fold)
    return [base / f"{part}_{kind}.npy" for part in ROLES for kind in ("label", "int2name")]


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle; truncated files fail to parse
        raise DataError(
            f"{path}: cannot read this .npy file ({exc}); it must be a plain numeric or "
            "byte-string array: copy it again from the pack"
        ) from exc


def _names(path: Path) -> list[str]:
    raw = _load_npy(path)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1 or raw.dtype.kind not in "SU":
        raise DataError(f"{path}: expected utterance ids as [N] or [N, 1] strings, got {raw.shape}")
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in raw.tolist()]


def _labels(path: Path, n_classes: int, classes: list[str]) -> np.ndarray:
    raw = _load_npy(path)
    if raw.ndim == 2:
        if raw.shape[1] != n_classes:
            raise DataError(
                f"{path}: one-hot labels have {raw.shape[1]} columns but option classes has "
                f"{n_classes} ({classes}); read the class order from the pack's documentation "
                "and set `classes`"
            )
        bad = np.flatnonzero(raw.max(axis=1) <= 0) if len(raw) else np.array([], dtype=int)
        if len(bad):
            raise DataError(f"{path}: row {int(bad[0])} has no positive entry (not one-hot)")
        return raw.argmax(axis=1).astype(np.int64)
    if raw.ndim == 1 and raw.dtype.kind in "iu":
        if len(raw) and (raw.min() < 0 or raw.max() >= n_classes):
            raise DataError(
                f"{path}: class indices outside 0..{n_classes - 1}; check option classes"
            )
        return raw.astype(np.int64)
    raise DataError(f"{path}: expected one-hot [N, C] or class indices [N], got {raw.shape}")


def _read_fold(source: Path, fold: int, classes: list[str]) -> dict[str, tuple[list[str], Any]]:
    """{role: (names, label indices)} for one fold folder, lengths checked."""
    base = source / "target" / str(fold)
    out = {}
    for part, role in ROLES.items():
        names = _names(base / f"{part}_int2name.npy")
        labels = _labels(base / f"{part}_label.npy", len(classes), classes)
        if len(names) != len(labels):
            raise DataError(
                f"{base}: {part}_int2name.npy has {len(names)} names but {part}_label.npy has "
                f"{len(labels)} labels; copy the fold folder again"
            )
        out[role] = (names, labels)
    return out


def _manifest(
    targets: Mapping[int, Mapping[str, tuple[list[str], np.ndarray]]],
    classes: list[str],
    dataset: str,
    options: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Manifest (label, speaker, test fold) and protocol rows from the fold tables."""
    label: dict[str, int] = {}
    test_fold: dict[str, int] = {}
    rows: list[tuple[str, int, str]] = []
    for fold, parts in targets.items():
        seen: dict[str, str] = {}
        for role, (names, labels) in parts.items():
            for name, lab in zip(names, labels.tolist(), strict=True):
                where = f"target/{fold}/{_file_role(role)}"
                if name in seen:
                    raise DataError(
                        f"{where}: utterance {name!r} is also in {seen[name]} of the same fold; "
                        "the fold tables overlap (train/test leakage): copy target/ again"
                    )
                seen[name] = where
                if label.setdefault(name, lab) != lab:
                    raise DataError(
                        f"{where}: utterance {name!r} is labelled {classes[lab]!r} here but "
                        f"{classes[label[name]]!r} in another fold; the label files disagree"
                    )
                if role == "test":
                    if name in test_fold:
                        raise DataError(
                            f"{where}: utterance {name!r} is tested in folds {test_fold[name]} "
                            f"and {fold}; cross-validation folds must test each utterance once"
                        )
                    test_fold[name] = fold
                rows.append((name, fold, role))
    ids = sorted(label)
    pattern = options.get("speaker_pattern")
    manifest = pd.DataFrame(
        {
            "sample_id": ids,
            "speaker": [speaker_of(i, pattern) for i in ids],
            "label": [classes[label[i]] for i in ids],
            "text": [""] * len(ids),
            "source": [dataset] * len(ids),
            "fold": np.array([test_fold.get(i, -1) for i in ids], dtype=np.int64),
        }
    )
    protocol = pd.DataFrame(rows, columns=["sample_id", "fold", "role"])
    protocol["fold"] = protocol["fold"].astype(np.int64)
    protocol = protocol.sort_values(["fold", "sample_id"], kind="stable").reset_index(drop=True)
    return manifest, protocol


def _file_role(role: str) -> str:
    return {v: k for k, v in ROLES.items()}[role] + "_int2name.npy"


# --- HDF5 -------------------------------------------------------------------------------------


def _corrupt(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"{path}: cannot read this HDF5 file ({exc}); it is truncated or corrupt, so the "
        "download or copy is incomplete: copy it again from the pack"
    )


def _h5_array(h5: Any, name: str, path: Path) -> Any:
    """The dataset stored under `name`: the key itself, or the array inside its group."""
    import h5py

    node = h5[name]
    if isinstance(node, h5py.Dataset):
        return node
    for key in ("feat", "feature", "features"):
        if isinstance(node.get(key), h5py.Dataset):
            return node[key]
    inner = [node[k] for k in node if isinstance(node[k], h5py.Dataset)]
    if len(inner) == 1:
        return inner[0]
    raise DataError(
        f"{path}: utterance {name!r} is a group without a single feature dataset "
        f"(has {sorted(node)}); expected a [T, D] dataset or a group with `feat`"
    )


def _read_h5_feature(path: Path, ids: list[str], dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Pack the frames of `ids` from one HDF5 file: shapes first, then one preallocated array."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            missing = [i for i in ids if i not in h5]
            if missing:
                raise DataError(
                    f"{path}: {len(missing)} utterance(s) listed in target/ are not in this file "
                    f"(first: {missing[:3]}); the HDF5 file and target/ come from different packs"
                )
            arrays = [_h5_array(h5, i, path) for i in ids]
            lengths = np.zeros(len(ids) + 1, dtype=np.int64)
            for k, (name, arr) in enumerate(zip(ids, arrays, strict=True)):
                if arr.ndim != 2:
                    raise DataError(
                        f"{path}: utterance {name!r} has shape {arr.shape}, expected frames [T, D]"
                    )
                if dim is None:
                    dim = int(arr.shape[1])
                if arr.shape[1] != dim:
                    raise DataError(
                        f"{path}: utterance {name!r} has dimension {arr.shape[1]}, expected {dim} "
                        "(option dims); is this the right feature file?"
                    )
                lengths[k + 1] = arr.shape[0]
            offsets = np.cumsum(lengths)
            values = np.empty((int(offsets[-1]), int(dim or 0)), dtype=np.float32)
            for k, arr in enumerate(arrays):
                if offsets[k + 1] > offsets[k]:
                    values[offsets[k] : offsets[k + 1]] = arr[()]
    except DataError:
        raise
    except (OSError, RuntimeError, KeyError) as exc:
        raise _corrupt(path, exc) from exc
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        utt = ids[int(np.searchsorted(offsets, row, side="right")) - 1]
        raise DataError(f"{path}: utterance {utt!r} has NaN or infinite values; re-extract it")
    return values, offsets


def _copy_normalisation(
    path: Path,
    source: Path,
    out_dir: Path,
    modality: str,
    values: np.ndarray,
    offsets: np.ndarray,
    protocol: pd.DataFrame,
    ids: list[str],
) -> dict[str, Any]:
    """Store the pack's per-fold mean/std and how far they are from this pack's training frames.

    `train_mean_gap` (per fold, max over dims of |mean_pack - mean_train| / std_pack) lets a user
    check that the statistics belong to these folds; it is a report, not a gate.
    """
    import h5py

    dim = values.shape[1]
    try:
        with h5py.File(path, "r") as h5:
            keys = sorted((k for k in h5 if k.isdigit()), key=int)
            mean = np.stack([np.asarray(h5[k]["mean"], dtype=np.float64).reshape(-1) for k in keys])
            std = np.stack([np.asarray(h5[k]["std"], dtype=np.float64).reshape(-1) for k in keys])
    except (OSError, RuntimeError, KeyError) as exc:
        raise _corrupt(path, exc) from exc
    except ValueError as exc:
        raise DataError(f"{path}: the folds' mean/std vectors differ in length ({exc})") from exc
    if not keys:
        raise DataError(f"{path}: no fold groups '1', '2', ... with mean and std")
    if mean.shape[1] != dim or std.shape[1] != dim:
        raise DataError(
            f"{path}: mean/std have dimension {mean.shape[1]} but the {modality} feature has {dim}"
        )
    folds = np.array([int(k) for k in keys], dtype=np.int64)
    lacking = sorted(set(protocol["fold"].unique().tolist()) - set(folds.tolist()))
    if lacking:
        raise DataError(f"{path}: no statistics for fold(s) {lacking}; copy the file again")
    target = out_dir / "normalisation" / f"{modality}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, mean=mean, std=std, folds=folds)
    gaps = _train_mean_gap(values, offsets, protocol, ids, folds, mean, std)
    return {
        "file": f"normalisation/{modality}.npz",
        "source": path.relative_to(source).as_posix(),
        "sha256": sha256_file(target),
        "folds": folds.tolist(),
        "dim": int(dim),
        "train_mean_gap": gaps,
    }


def _train_mean_gap(
    values: np.ndarray,
    offsets: np.ndarray,
    protocol: pd.DataFrame,
    ids: list[str],
    folds: Iterable[int],
    mean: np.ndarray,
    std: np.ndarray,
) -> dict[str, float]:
    lengths = np.diff(offsets)
    sums = np.zeros((len(ids), values.shape[1]), dtype=np.float64)
    nonempty = lengths > 0
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(values, offsets[:-1][nonempty], axis=0, dtype=np.float64)
    index = {name: k for k, name in enumerate(ids)}
    train = protocol[protocol["role"] == "train"]
    out = {}
    for row, fold in enumerate(folds):
        members = [index[s] for s in train.loc[train["fold"] == fold, "sample_id"]]
        frames = int(lengths[members].sum()) if members else 0
        if frames == 0:
            continue
        ours = sums[members].sum(axis=0) / frames
        scale = np.where(std[row] > 0, std[row], 1.0)
        out[str(fold)] = float(np.max(np.abs(ours - mean[row]) / scale))
    return out
