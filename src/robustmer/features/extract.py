"""The `extract` stage: raw corpus folder -> canonical feature store.

A raw corpus folder holds `metadata.csv` (one row per utterance: sample_id, speaker, label,
fold or split, text, and media paths relative to the folder) and `corpus.json` (classes and
provenance). Every entry of params.yaml `extract.<modality>` (docs/features.md) is run on the
modality's media (transcripts for text) and writes `<modality>/<entry><suffix>` features.

Items already in the per-item cache (robustmer.features.cache) are read back instead of being
extracted; the others run over `extract.workers` processes and each result is cached as soon as
it arrives, so a rerun after an interruption, or after adding files, extracts only what is
missing. A bad item either fails the stage after all good items are cached (`on_error: fail`,
one error listing every bad file) or becomes a recorded zero placeholder (`placeholder`). The
store is built in a temporary sibling folder and swapped in at the end, so a failed run leaves
the previous store intact.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.config import Params
from robustmer.data.store import FeatureMeta, StoreWriter
from robustmer.errors import DataError
from robustmer.features.base import (
    ExtractedFeature,
    Extractor,
    ItemError,
    OutputSpec,
    parallel_map,
)
from robustmer.features.cache import CacheEntry, MediaIndex, cache_root, text_hash
from robustmer.features.registry import build_extractors, check_feature_names, uses_torch
from robustmer.io import atomic_dir, atomic_path, read_json, write_json

log = logging.getLogger(__name__)

PLACEHOLDERS_FILE = "placeholders.parquet"  # one row per placeholder: sample, feature, why
PLACEHOLDER_COLUMNS = ("sample_id", "feature", "item", "reason")
MAX_LISTED = 50  # bad items named in the error message; the rest are counted
FIX = (
    "replace or remove these files (a removed utterance must also leave the corpus metadata: "
    "re-run `robustmer acquire`), or set `extract.on_error: placeholder` in params.yaml to store "
    "zeros for them (recorded in the store's placeholders.parquet and checked by `robustmer "
    "validate`). Everything else is cached, so the rerun extracts only these."
)


def read_raw_corpus(raw_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    meta_path, info_path = raw_dir / "metadata.csv", raw_dir / "corpus.json"
    for path in (meta_path, info_path):
        if not path.is_file():
            raise DataError(f"{path} is missing; run `robustmer acquire` (or `dvc repro acquire`)")
    frame = pd.read_csv(meta_path, keep_default_na=False, dtype={"sample_id": str, "speaker": str})
    return frame, read_json(info_path)


def _media_paths(raw_dir: Path, frame: pd.DataFrame, column: str) -> list[Path] | None:
    if column not in frame.columns:
        return None
    paths = [raw_dir / p for p in frame[column]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{len(missing)} {column} file(s) listed in {raw_dir / 'metadata.csv'} do not exist: "
            f"{shown}; re-run `robustmer acquire` or fix the paths"
        )
    return paths


def manifest_from_metadata(raw_dir: Path, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Manifest columns of the store; media paths become relative to the project root."""
    manifest = frame.copy()
    if "text" not in manifest.columns:
        manifest["text"] = ""  # a corpus without transcripts (EmoDB, RAVDESS): no text feature
    if "source" not in manifest.columns:
        manifest["source"] = source
    for column in ("audio_path", "video_path"):
        if column in manifest.columns:
            manifest[column] = [(raw_dir / p).as_posix() for p in manifest[column]]
    return manifest


def modality_items(
    raw_dir: Path, frame: pd.DataFrame, cfg: dict[str, Any]
) -> dict[str, list[Path] | list[str]]:
    """What each configured modality extracts from, in manifest order.

    Audio comes from `audio_path`; from `video_path` (the audio extractors decode the video's
    sound track) when `extract.audio_from_video` is `true`, or `auto` and there is no
    `audio_path`. Text is the `text` column, when the corpus has one.
    """
    out: dict[str, list[Path] | list[str]] = {}
    audio = _media_paths(raw_dir, frame, "audio_path")
    video = _media_paths(raw_dir, frame, "video_path")
    mode = cfg.get("audio_from_video", "auto")
    if video and (mode is True or (mode == "auto" and audio is None)):
        audio = video
    if audio and cfg.get("audio"):
        out["audio"] = audio
    if video and cfg.get("video"):
        out["video"] = video
    if "text" in frame.columns and cfg.get("text"):
        out["text"] = [t if isinstance(t, str) else "" for t in frame["text"]]
    return out


def recorded_hashes(
    raw_dir: Path, frame: pd.DataFrame, info: dict[str, Any]
) -> dict[str, tuple[str, int]]:
    """Media sha256 the corpus recorded at acquire time: abs path -> (sha256, record mtime_ns).

    Adapters write `<modality>_sha256` columns in metadata.csv; the built-in generator writes a
    relative path -> sha256 map in corpus.json.
    """
    out: dict[str, tuple[str, int]] = {}
    meta_time = (raw_dir / "metadata.csv").stat().st_mtime_ns
    for modality in ("audio", "video"):
        path_col, hash_col = f"{modality}_path", f"{modality}_sha256"
        if path_col in frame.columns and hash_col in frame.columns:
            for rel, digest in zip(frame[path_col], frame[hash_col], strict=True):
                if isinstance(digest, str) and len(digest) == 64:
                    out[(raw_dir / rel).absolute().as_posix()] = (digest, meta_time)
    corpus_hashes = info.get("sha256")
    if isinstance(corpus_hashes, dict):
        info_time = (raw_dir / "corpus.json").stat().st_mtime_ns
        for rel, digest in corpus_hashes.items():
            out[(raw_dir / rel).absolute().as_posix()] = (str(digest), info_time)
    return out


def resolve_device(name: str) -> str:
    """`device` of params.yaml as a torch device string (torch is imported only if needed)."""
    if name == "cpu":
        return "cpu"
    from robustmer.device import resolve_device as resolve

    return str(resolve(name))


@dataclass
class BadItem:
    """One item an entry could not extract."""

    feature: str  # "<modality>/<entry>"
    sample_ids: list[str]
    item: str
    reason: str


@dataclass
class Extraction:
    """A modality's features (complete only when `bad` is empty or placeholders were asked
    for) and the items that failed."""

    features: list[ExtractedFeature] = field(default_factory=list)
    bad: list[BadItem] = field(default_factory=list)
    placeholders: list[dict[str, str]] = field(default_factory=list)

    def __iadd__(self, other: Extraction) -> Extraction:
        self.features += other.features
        self.bad += other.bad
        self.placeholders += other.placeholders
        return self


def _label(modality: str, item: Any) -> str:
    """How an item is named in messages: a media path, or the start of a transcript."""
    if modality != "text":
        return str(item)
    text = str(item)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def bad_items_error(bad: Sequence[BadItem]) -> DataError:
    """One error naming every bad item (first MAX_LISTED), its reason and the fix."""
    lines = [
        f"  - {b.feature}: {b.item} (sample {', '.join(b.sample_ids[:3])}): {b.reason}"
        for b in bad[:MAX_LISTED]
    ]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    return DataError(
        f"{len(bad)} item(s) could not be extracted:\n" + "\n".join(lines) + f"\nFix: {FIX}"
    )


# ---------------------------------------------------------------------------------------------
# Worker side: one configured extractor per process, set up on its first batch.

_WORKER: dict[str, Any] = {}


def _init_worker(ext: Extractor, threads: int | None) -> None:
    """Pool initializer (also run in-process for one worker): remember the extractor."""
    if threads is not None:  # several processes: keep each torch/BLAS to its share of the CPUs
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    _WORKER.clear()
    _WORKER.update(ext=ext, ready=False)


def _numeric(stats: dict[str, Any]) -> dict[str, float]:
    return {
        k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _extract_one_by_one(ext: Extractor, batch: list[Any]) -> list[Any]:
    """Per item, its result dict or an ItemError; the stats delta rides along per item."""
    out: list[Any] = []
    has_stats = callable(getattr(ext, "stats", None))
    for item in batch:
        before = _numeric(ext.stats()) if has_stats else {}  # type: ignore[attr-defined]
        try:
            (result,) = ext.extract([item])
        except Exception as exc:
            out.append((ItemError.from_exception(item, exc), {}))
            continue
        after = _numeric(ext.stats()) if has_stats else {}  # type: ignore[attr-defined]
        out.append((result, {k: v - before.get(k, 0) for k, v in after.items()}))
    return out


def _extract_batch(batch: list[Any]) -> tuple[list[OutputSpec] | None, list[Any]]:
    """Extract one batch in a worker: (the extractor's outputs, per-item (result or ItemError,
    stats)). Every batch carries the outputs: results arrive in completion order, and batches a
    pool had finished before the parent looked come back in any order, so a worker's second
    batch can be read before its first.

    A failing batch is retried item by item so one bad item does not take its batch-mates
    along. Setup errors (a missing model) are not item errors: they propagate and stop the run.
    """
    ext: Extractor = _WORKER["ext"]
    if not _WORKER["ready"]:
        ext.setup()
        _WORKER["ready"] = True
        _WORKER["specs"] = ext.outputs()
    specs = _WORKER["specs"]
    if len(batch) == 1 or callable(getattr(ext, "stats", None)):
        return specs, _extract_one_by_one(ext, batch)
    try:
        results = ext.extract(batch)
    except Exception:
        return specs, _extract_one_by_one(ext, batch)
    if len(results) != len(batch):
        raise RuntimeError(
            f"{type(ext).__name__}.extract returned {len(results)} results for {len(batch)} items"
        )
    return specs, [(r, {}) for r in results]


# ---------------------------------------------------------------------------------------------
# Main side.


def _check_result(
    ext: Extractor, modality: str, specs: list[OutputSpec], item: Any, result: dict[str, Any]
) -> dict[str, np.ndarray] | ItemError:
    """The result as float32 arrays, an ItemError for an empty sequence, or a contract error."""
    where = f"{modality}/{ext.name} ({type(ext).__name__})"
    if set(result) != {s.suffix for s in specs}:
        raise DataError(
            f"{where} returned outputs {sorted(result)} for {item}, but declared "
            f"{sorted(s.suffix for s in specs)}; fix the extractor"
        )
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = np.asarray(result[spec.suffix], dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != spec.dim:
            raise DataError(
                f"{where} returned shape {arr.shape} for {item} ({spec.suffix or 'main'} "
                f"output), expected [T, {spec.dim}]; fix the extractor"
            )
        if arr.shape[0] == 0:
            return ItemError(str(item), f"{spec.suffix or 'main'} output has no frames")
        if spec.level == "utterance" and arr.shape[0] != 1:
            raise DataError(f"{where}: utterance-level output of {item} has {arr.shape[0]} rows")
        arrays[spec.suffix] = arr
    return arrays


def _probe(ext: Extractor, items: Sequence[Any]) -> str:
    """Let an extractor with `probe(items)` read what its outputs depend on in the corpus (a
    video's fps); return what changed, which tells cached declarations apart."""
    probe = getattr(ext, "probe", None)
    if not callable(probe):
        return ""
    before = dict(vars(ext))
    probe(items)
    changed = {k: v for k, v in vars(ext).items() if k not in before or before[k] != v}
    return json.dumps(changed, sort_keys=True, default=str) if changed else ""


def _specs_by_setup(ext: Extractor) -> list[OutputSpec]:
    """Outputs of an entry whose items are all cached but whose entry.json is gone."""
    ext.setup()
    return ext.outputs()


def _run_entry(
    modality: str,
    ext: Extractor,
    items: Sequence[Any],
    keys: Sequence[str],
    entry: CacheEntry,
    workers: int,
    device: str,
) -> tuple[list[OutputSpec], dict[str, tuple[dict[str, np.ndarray], dict[str, float]]], dict]:
    """Cached and newly extracted results of one entry, keyed by item key, and the errors."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    done: dict[str, tuple[dict[str, np.ndarray], dict[str, float]]] = {}
    errors: dict[str, ItemError] = {}
    variant = _probe(ext, items)
    specs = entry.specs(variant)
    if specs is not None:
        for key in first:
            hit = entry.load(key, specs)
            if hit is not None:
                done[key] = hit
    missing = [k for k in first if k not in done]
    log.info(
        "%s/%s: %d item(s), %d cached, %d to extract",
        modality,
        ext.name,
        len(first),
        len(done),
        len(missing),
    )
    if not missing:
        if specs is None:
            specs = _specs_by_setup(ext)
            entry.save_specs(specs, variant)
        return specs, done, errors

    device = resolve_device(device) if uses_torch(ext) else "cpu"
    if ext.device != device:
        ext = type(ext)(ext.name, {"kind": ext.kind, **ext.cfg}, device)
        _probe(ext, items)
        if device != "cpu":
            workers = 1  # one model on the accelerator; batching is the parallelism there
    batch_size = max(1, int(getattr(ext, "batch_size", 1) or 1))
    batches = [missing[s : s + batch_size] for s in range(0, len(missing), batch_size)]
    workers = max(1, min(workers, len(batches)))
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    state: dict[str, list[OutputSpec] | None] = {"specs": specs}

    def on_result(index: int, value: tuple[list[OutputSpec] | None, list[Any]]) -> None:
        got, results = value
        known = state["specs"]
        if got is not None and known is not None and got != known:
            raise DataError(
                f"{modality}/{ext.name}: the extractor now declares outputs {got} but the cache "
                f"recorded {known} under the same cache key; its version() must change when "
                f"its outputs do. Delete {entry.dir} to start this entry afresh"
            )
        if got is not None and known is None:
            state["specs"] = known = got
            entry.save_specs(got, variant)
        assert known is not None, "every batch carries the outputs"
        for key, (result, stats) in zip(batches[index], results, strict=True):
            if not isinstance(result, ItemError):
                result = _check_result(ext, modality, known, items[first[key]], result)
            if isinstance(result, ItemError):
                errors[key] = result
                continue
            entry.store(key, result, stats)
            done[key] = (result, stats)

    try:
        parallel_map(
            _extract_batch,
            [[items[first[k]] for k in batch] for batch in batches],
            workers,
            f"{modality}/{ext.name}",
            _init_worker,
            (ext, threads),
            on_result=on_result,
            chunksize=1,
            unit="batch" if batch_size > 1 else "item",
        )
    finally:
        _WORKER.clear()  # run in-process, it holds the set-up extractor (a model, maybe)
    specs = state["specs"]
    assert specs is not None
    return specs, done, errors


def extract_modality(
    modality: str,
    items: Sequence[Path] | Sequence[str],
    cfg: dict[str, Any],
    *,
    sample_ids: Sequence[str],
    device: str = "auto",
    workers: int | None = None,
    cache: Path | None = None,
    keys: Sequence[str] | None = None,
) -> Extraction:
    """Run every `extract.<modality>` entry of `cfg` (the `extract` section) on `items`.

    `keys` are the items' content hashes (media sha256); text is hashed here. `cache` is the
    cache root (None: nothing is read or written). Bad items come back in `bad`; with
    `on_error: placeholder` the features hold zeros `[1, D]` for them, listed in
    `placeholders`, else the features are left out whenever any item is bad.
    """
    if keys is None:
        keys = [text_hash(t) if modality == "text" else str(t) for t in items]
    workers = workers or int(cfg.get("workers", 1))
    placeholder = cfg.get("on_error", "fail") == "placeholder"
    extractors = build_extractors(cfg, modality, "cpu")  # the device only matters on a miss
    out = Extraction()
    written: dict[str, list[str]] = {}
    rows: dict[str, list[int]] = {}  # item key -> its manifest rows (a file may be listed twice)
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    for ext in extractors:
        started = time.perf_counter()
        version = ext.version()  # before any setup, as in the cache key
        entry = CacheEntry(cache, modality, ext)
        specs, done, errors = _run_entry(modality, ext, items, keys, entry, workers, device)
        written[ext.name] = [ext.name + s.suffix for s in specs]
        check_feature_names(modality, written)
        bad = [
            BadItem(
                f"{modality}/{ext.name}",
                [sample_ids[i] for i in rows[key]],
                _label(modality, errors[key].item if key in errors else items[rows[key][0]]),
                errors[key].reason if key in errors else "not extracted",
            )
            for key in rows
            if key not in done
        ]
        out.bad += bad
        if bad and not placeholder:
            continue  # the stage fails after every entry has had its go (and cached its work)
        for b in bad:
            log.warning("%s: placeholder zeros for %s (%s)", b.feature, b.item, b.reason)
            out.placeholders += [
                {
                    "sample_id": sid,
                    "feature": f"{modality}/{ext.name}{spec.suffix}",
                    "item": b.item,
                    "reason": b.reason,
                }
                for sid in b.sample_ids
                for spec in specs
            ]
        out.features += _assemble(modality, ext, version, specs, keys, done)
        log.info(
            "%s/%s: done in %.1fs (%d placeholder item(s))",
            modality,
            ext.name,
            time.perf_counter() - started,
            len(bad),
        )
    return out


def summarise_stats(per_item: Sequence[dict[str, float]]) -> dict[str, float]:
    """Sum of the items' stat counters; a rate cannot be summed, so the known one is derived.

    Per-item stats are the change of the extractor's `stats()` over that item, cached with it,
    so the summary is the same whether items were extracted now or read from the cache.
    """
    totals: dict[str, float] = {}
    for stats in per_item:
        for name, value in stats.items():
            if not name.endswith("_rate"):
                totals[name] = totals.get(name, 0) + value
    if "faces_found" in totals and "detections_tried" in totals:
        totals["face_found_rate"] = totals["faces_found"] / max(totals["detections_tried"], 1)
    return totals


def _assemble(
    modality: str,
    ext: Extractor,
    version: str,
    specs: list[OutputSpec],
    keys: Sequence[str],
    done: dict[str, tuple[dict[str, np.ndarray], dict[str, float]]],
) -> list[ExtractedFeature]:
    """Per output, the sequences in manifest order (zeros `[1, D]` for a missing item)."""
    n_missing = sum(1 for k in keys if k not in done)
    stats = summarise_stats([done[k][1] for k in keys if k in done])
    features = []
    for spec in specs:
        zeros = np.zeros((1, spec.dim), dtype=np.float32)
        sequences = [done[k][0][spec.suffix] if k in done else zeros for k in keys]
        params = {"kind": ext.kind, "entry": ext.name, **ext.cfg, "n_placeholders": n_missing}
        if stats:
            params["stats"] = stats
        meta = FeatureMeta(
            modality,
            ext.name + spec.suffix,
            spec.level,
            spec.dim,
            frame_rate=spec.frame_rate,
            version=version,
            params=params,
            feature_names=list(spec.feature_names) if spec.feature_names else None,
        )
        features.append(ExtractedFeature(meta, sequences))
    return features


def write_placeholders(root: Path, rows: Sequence[dict[str, str]]) -> None:
    """The store's record of placeholder rows (always written, empty when there are none)."""
    frame = pd.DataFrame(list(rows), columns=list(PLACEHOLDER_COLUMNS))
    with atomic_path(root / PLACEHOLDERS_FILE, suffix=".parquet") as tmp:
        frame.astype(str).to_parquet(tmp, index=False)


def read_placeholders(root: Path) -> pd.DataFrame:
    """Placeholder rows of a store; an empty table for stores written without the record."""
    path = Path(root) / PLACEHOLDERS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=list(PLACEHOLDER_COLUMNS))
    return pd.read_parquet(path)


def extract(params: Params, raw_dir: Path, out_dir: Path) -> Path:
    """Extract every configured modality the corpus has into the store at `out_dir`."""
    cfg = params["extract"]
    corpus_path = raw_dir / "corpus.json"
    if corpus_path.is_file() and read_json(corpus_path).get("kind") == "pack":
        return convert_pack(read_json(corpus_path), out_dir)
    frame, info = read_raw_corpus(raw_dir)
    sources = modality_items(raw_dir, frame, cfg)
    sample_ids = frame["sample_id"].astype(str).tolist()
    root = cache_root(cfg)
    index = MediaIndex(root)
    recorded = recorded_hashes(raw_dir, frame, info) if root is not None else {}
    result = Extraction()
    try:
        for modality, items in sources.items():
            keys = None
            if modality != "text" and root is not None:
                keys = index.hashes([Path(p) for p in items], recorded)
            result += extract_modality(
                modality,
                items,
                cfg,
                sample_ids=sample_ids,
                device=params["device"],
                cache=root,
                keys=keys,
            )
    finally:
        index.save()
    if result.bad and cfg.get("on_error", "fail") != "placeholder":
        raise bad_items_error(result.bad)

    with atomic_dir(out_dir) as tmp:
        writer = StoreWriter(tmp, info.get("dataset", params["dataset"]), info["classes"])
        writer.write_manifest(manifest_from_metadata(raw_dir, frame, params["dataset"]))
        for feat in result.features:
            writer.add_feature(feat.meta, feat.sequences)
            log.info("%s: dim %d, %d frames", feat.meta.name, feat.meta.dim, feat.meta.n_frames)
        write_placeholders(tmp, result.placeholders)
        writer.finalize(
            {
                "raw_corpus": {"path": raw_dir.as_posix(), "info": info},
                "n_placeholders": len({p["sample_id"] for p in result.placeholders}),
                # a corpus with an unlabelled pool (label ""): the store declares it
                **({"unlabelled": int(info["unlabelled"])} if info.get("unlabelled") else {}),
            }
        )
    return out_dir


def convert_pack(corpus: dict[str, Any], out_dir: Path) -> Path:
    """A feature pack's `extract`: convert the (unchanged) pack into the canonical store."""
    from robustmer.data.acquire import check_unchanged
    from robustmer.data.registry import dataset_info

    info = dataset_info(corpus["dataset"])
    source = check_unchanged(corpus)
    with atomic_dir(out_dir) as tmp:
        summary = info.adapter_fn()(source, tmp, corpus.get("options") or {})
        store_info = read_json(tmp / "store.json")
        provenance = {k: v for k, v in corpus.items() if k != "files"}
        store_info["raw_corpus"] = {"path": source.as_posix(), "info": provenance}
        write_json(tmp / "store.json", store_info)
    log.info("converted %s into %s: %s", corpus["dataset"], out_dir, summary)
    return out_dir
