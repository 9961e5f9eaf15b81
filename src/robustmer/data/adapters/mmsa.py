"""CMU-MOSI / CMU-MOSEI aligned pickles in the MMSA layout -> the canonical feature store.

`aligned_50.pkl` holds `{'train', 'valid', 'test'}`, each a dict of per-sample arrays: `id`,
`raw_text`, `text` (BERT features [N, 50, 768]), `audio` [N, 50, Da], `vision` [N, 50, Dv],
optional `audio_lengths` / `vision_lengths`, and `regression_labels` in [-3, 3]. A pickle can run
code when loaded, so it is read with the restricted unpickler (plain numpy and builtin types).

Audio and vision keep their first `min(length, T)` frames when lengths are given (all T
otherwise); text keeps all T BERT positions (`text_bert` ids are not stored). Like the reference
loader, `audio == -inf` becomes 0; any other non-finite value stops the conversion.

Options (all optional):
    dataset   dataset name written to the store and the manifest `source` (default mosi)
    file      pickle name when `source` is a folder (default aligned_50.pkl)
    dims      {audio, video, text: feature dim}, checked (MOSI 5/20/768, MOSEI 74/35/768)
    features  {audio, video, text: extractor name} of the stored features
              (default {audio: mmsa, video: mmsa, text: bert})
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.store import FeatureMeta, StoreWriter
from robustmer.errors import DataError

SPLITS = ("train", "valid", "test")
CLASSES = ("negative", "neutral", "positive")
# modality -> key of the per-split dict, key of its lengths
KEYS = {"audio": ("audio", "audio_lengths"), "video": ("vision", "vision_lengths")}
DEFAULT_EXTRACTORS = {"audio": "mmsa", "video": "mmsa", "text": "bert"}
ADAPTER = "mmsa"
_CHUNK = 512  # samples copied at a time
LAYOUT = "expected an MMSA aligned pickle (e.g. MOSI/Processed/aligned_50.pkl) or its folder"


def files_mmsa(source: Path, options: Mapping[str, Any]) -> list[Path]:
    """The pickle file; `source` is the file itself or the folder holding option `file`."""
    source = Path(source)
    path = source if source.is_file() else source / str(options.get("file", "aligned_50.pkl"))
    if not path.is_file():
        raise DataError(f"{path}: no such file; {LAYOUT} (option `file` names it in a folder)")
    return [path]


def convert_mmsa(source: Path, out_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Write the pickle as a canonical store with official splits and regression targets."""
    from robustmer.data.safe_pickle import load_pickle

    (path,) = files_mmsa(source, options)
    dataset = str(options.get("dataset", "mosi"))
    data = load_pickle(path)
    if not isinstance(data, Mapping) or any(s not in data for s in SPLITS):
        have = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise DataError(f"{path}: expected the splits {list(SPLITS)} at the top, found {have}")
    splits = {s: _check_split(path, s, data[s]) for s in SPLITS}
    manifest = _manifest(path, splits, dataset)

    writer = StoreWriter(out_dir, dataset, CLASSES)
    writer.write_manifest(manifest)
    dims = {str(k): int(v) for k, v in (options.get("dims") or {}).items()}
    names = {**DEFAULT_EXTRACTORS, **dict(options.get("features") or {})}
    summary: dict[str, Any] = {"splits": {s: len(splits[s]["id"]) for s in SPLITS}}
    for modality in ("audio", "video", "text"):
        values, offsets, info = _pack(path, splits, modality, dims.get(modality))
        meta = FeatureMeta(
            modality,
            str(names[modality]),
            "frame",
            int(values.shape[1]),
            version=f"{ADAPTER}-aligned-pickle",
            params={"file": path.name, **info},
        )
        writer.add_feature(meta, values=values, offsets=offsets)
        summary[meta.name] = {"dim": meta.dim, "frames": int(offsets[-1]), **info}
    writer.finalize(extra={"adapter": ADAPTER, "protocol": "splits", "splits": summary["splits"]})
    summary["labels"] = manifest["label"].value_counts().sort_index().to_dict()
    return summary


def speaker_of(sample_id: str) -> str:
    """The video id: MOSI ids look like `03bSnISJMiM$_$1`, older ones like `03bSnISJMiM_1`."""
    if "$_$" in sample_id:
        return sample_id.split("$_$", 1)[0]
    return sample_id.rsplit("_", 1)[0] if "_" in sample_id else sample_id


def _ids(path: Path, split: str, raw: Any) -> list[str]:
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{path}: {split}/id has shape {arr.shape}, expected one id per sample")
    return [_text(x) for x in arr.tolist()]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_split(path: Path, split: str, part: Any) -> dict[str, Any]:
    """Pull the arrays the store needs out of one split and check their sample counts agree."""
    if not isinstance(part, Mapping):
        raise DataError(f"{path}: split {split!r} is a {type(part).__name__}, expected a dict")
    needed = ("id", "audio", "vision", "text", "regression_labels")
    missing = [k for k in needed if k not in part]
    if missing:
        raise DataError(f"{path}: split {split!r} lacks {missing}; {LAYOUT}")
    ids = _ids(path, split, part["id"])
    out: dict[str, Any] = {"id": ids}
    for key in ("audio", "vision", "text"):
        arr = np.asarray(part[key])
        if arr.dtype.kind not in "fiu" or arr.ndim != 3:
            raise DataError(
                f"{path}: {split}/{key} has shape {arr.shape} ({arr.dtype}), expected numbers "
                "[N, T, D]"
            )
        out[key] = arr
    regression = np.asarray(part["regression_labels"], dtype=np.float64)
    if regression.ndim == 2 and regression.shape[1] == 1:
        regression = regression[:, 0]
    if regression.ndim != 1:
        raise DataError(
            f"{path}: {split}/regression_labels has shape {regression.shape}; expected one "
            "value per sample"
        )
    out["regression"] = regression
    for key in ("audio_lengths", "vision_lengths"):
        if key in part and part[key] is not None:
            out[key] = np.asarray(part[key]).reshape(-1).astype(np.int64)
    raw_text = part.get("raw_text")
    out["raw_text"] = (
        [_text(t) for t in np.asarray(raw_text, dtype=object).reshape(-1).tolist()]
        if raw_text is not None
        else [""] * len(ids)
    )
    for key, value in out.items():
        if key != "id" and len(value) != len(ids):
            raise DataError(
                f"{path}: {split}/{key} has {len(value)} samples but {split}/id has {len(ids)}; "
                "the pickle is inconsistent"
            )
    return out


def _manifest(path: Path, splits: Mapping[str, dict[str, Any]], dataset: str) -> pd.DataFrame:
    ids: list[str] = []
    split_col: list[str] = []
    for s in SPLITS:
        ids += splits[s]["id"]
        split_col += [s] * len(splits[s]["id"])
    seen: dict[str, str] = {}
    for sid, s in zip(ids, split_col, strict=True):
        if sid in seen:
            raise DataError(
                f"{path}: sample id {sid!r} appears twice ({seen[sid]} and {s}); ids must be "
                "unique across splits"
            )
        seen[sid] = s
    regression = np.concatenate([splits[s]["regression"] for s in SPLITS])
    for s in SPLITS:
        reg = splits[s]["regression"]
        bad = np.flatnonzero(~np.isfinite(reg) | (reg < -3) | (reg > 3))
        if len(bad):
            k = int(bad[0])
            raise DataError(
                f"{path}: {s} sample {splits[s]['id'][k]!r} has regression label {reg[k]} "
                "(NaN or outside [-3, 3]); this is not an MMSA sentiment pickle"
            )
    label = np.where(regression < 0, CLASSES[0], np.where(regression > 0, CLASSES[2], CLASSES[1]))
    return pd.DataFrame(
        {
            "sample_id": ids,
            "speaker": [speaker_of(i) for i in ids],
            "label": label.astype(str),
            "text": [t for s in SPLITS for t in splits[s]["raw_text"]],
            "source": [dataset] * len(ids),
            "split": split_col,
            "regression": regression.astype(np.float64),
        }
    )


def _pack(
    path: Path, splits: Mapping[str, dict[str, Any]], modality: str, dim: int | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One preallocated [sum_T, D] array over all splits; audio -inf -> 0 as the loader does.

    Samples are copied in chunks so that the peak memory stays near pickle + store (MOSEI text
    alone is about 3.5 GB in float32).
    """
    key, len_key = KEYS.get(modality, ("text", ""))
    arrays = [splits[s][key] for s in SPLITS]
    dim = int(arrays[0].shape[2]) if dim is None else dim
    for s, arr in zip(SPLITS, arrays, strict=True):
        if arr.shape[2] != dim:
            raise DataError(
                f"{path}: {s}/{key} has dimension {arr.shape[2]}, expected {dim} (option dims: "
                "MOSI audio 5 / vision 20 / text 768, MOSEI 74 / 35 / 768)"
            )
    keeps = []
    cut = False
    for s, arr in zip(SPLITS, arrays, strict=True):
        n, t = arr.shape[:2]
        lengths = splits[s].get(len_key) if len_key else None
        cut = cut or lengths is not None
        keeps.append(np.full(n, t, dtype=np.int64) if lengths is None else np.clip(lengths, 0, t))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(keeps))]).astype(np.int64)
    values = np.empty((int(offsets[-1]), int(dim)), dtype=np.float32)
    neg_inf = 0
    start = 0
    for s, arr, keep in zip(SPLITS, arrays, keeps, strict=True):
        steps = np.arange(arr.shape[1])
        for lo in range(0, len(arr), _CHUNK):
            block = np.array(arr[lo : lo + _CHUNK], dtype=np.float32)  # a copy: -inf fix
            if modality == "audio":
                hit = np.isneginf(block)
                neg_inf += int(hit.sum())
                block[hit] = 0.0
            rows = block[steps[None, :] < keep[lo : lo + _CHUNK, None]]  # sample-major order
            bad = ~np.isfinite(rows).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                k = lo + int(np.searchsorted(np.cumsum(keep[lo : lo + _CHUNK]), row, "right"))
                raise DataError(
                    f"{path}: {s} sample {splits[s]['id'][k]!r} has NaN or infinite {key} "
                    "values; the pickle is damaged: copy it again"
                )
            values[start : start + len(rows)] = rows
            start += len(rows)
    info: dict[str, Any] = {"source_key": key, "cut_to_lengths": cut}
    if modality == "audio":
        info["neg_inf_set_to_zero"] = neg_inf
    return values, offsets, info
