"""Loading every frame feature of a dataset: canonical store versus one .npy file per sample.

    .venv/bin/python benchmarks/store_loading.py [--n 10000] [--level frame|utterance] [--json F]

Synthetic IEMOCAP-shaped frame features for N utterances: audio [T, 130] with T ~ U(50, 300),
video [T, 342] with T ~ U(20, 80), text [T, 1024] with T ~ U(10, 40) (about 2.6 GB of float32 at
N = 10,000), written once as a canonical store (two files per feature) and once as
features/<modality>/<utt>.npy (3 N files). Each reader is timed on all three features:

  store_open   FeatureStore.values/offsets (memory maps) + per-utterance views; bytes are read
               only when a model touches them (what opening a store costs a training run)
  store_read   the same, with the values copied into memory (every byte read)
  npy_files    np.load of every per-sample file (every byte read, 3 N opens)

"cold" runs first ask the kernel to drop the files from the page cache (posix_fadvise
DONTNEED: best effort, no root needed; pages another process holds may stay), "warm" runs
repeat the read with the cache full. The speedup target is npy_files / store >= 10.
`--level utterance` uses MERTools-style utterance vectors instead (eGeMAPS 88, HuBERT 768,
CLIP 512: one [D] file per sample and feature), where the per-file cost dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.store import FeatureMeta, FeatureStore, StoreWriter

FEATURES = {  # name -> (dim, frame-count range)
    "audio/comparE": (130, (50, 300)),
    "video/denseface": (342, (20, 80)),
    "text/bert_large": (1024, (10, 40)),
}
UTTERANCE_FEATURES = {  # MERTools-style utterance vectors: one [D] per sample and feature
    "audio/eGeMAPS_UTT": (88, (1, 1)),
    "audio/chinese-hubert-base-UTT": (768, (1, 1)),
    "video/clip-vit-base-UTT": (512, (1, 1)),
}


def build(
    root: Path, n: int, seed: int, features: dict[str, tuple[int, tuple[int, int]]]
) -> tuple[Path, dict[str, list[Path]]]:
    """The same random features as a store and as per-sample .npy files."""
    rng = np.random.default_rng(seed)
    ids = [f"utt{i:06d}" for i in range(n)]
    manifest = pd.DataFrame(
        {
            "sample_id": ids,
            "speaker": [f"spk{i % 10}" for i in range(n)],
            "label": ["neu"] * n,
            "text": [""] * n,
            "source": ["bench"] * n,
            "fold": np.arange(n, dtype=np.int64) % 10,
        }
    )
    store = root / "store"
    writer = StoreWriter(store, "bench", ["neu"])
    writer.write_manifest(manifest)
    files: dict[str, list[Path]] = {}
    for name, (dim, (lo, hi)) in features.items():
        lengths = rng.integers(lo, hi + 1, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = rng.standard_normal((int(offsets[-1]), dim), dtype=np.float32)
        modality, extractor = name.split("/")
        level = "utterance" if hi == 1 else "frame"
        writer.add_feature(
            FeatureMeta(modality, extractor, level, dim), values=values, offsets=offsets
        )
        folder = root / "npy" / name
        folder.mkdir(parents=True)
        files[name] = []
        for i, utt in enumerate(ids):
            path = folder / f"{utt}.npy"
            part = values[offsets[i] : offsets[i + 1]]
            np.save(path, part[0] if level == "utterance" else part)  # MERTools saves [D]
            files[name].append(path)
        del values
    writer.finalize()
    return store, files


def drop_cache(paths: Iterable[Path]) -> None:
    """Ask the kernel to forget these files' cached pages (best effort; clean pages only)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def store_files(store: Path) -> list[Path]:
    return [p for p in (store / "features").rglob("*.npy")]


def load_store(store: Path, read: bool) -> int:
    fs = FeatureStore(store)
    total = 0
    for name in fs.feature_names():
        values, offsets = fs.values(name), fs.offsets(name)
        if read:
            values = np.array(values)  # every byte read into memory
        views = [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        total += len(views)
    return total


def load_npy(files: dict[str, list[Path]]) -> int:
    total = 0
    for paths in files.values():
        arrays = [np.load(p) for p in paths]
        total += len(arrays)
    return total


def best_of(fn: Callable[[], Any], repeats: int, before: Callable[[], None] | None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="utterances (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per reader; best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--level",
        choices=("frame", "utterance"),
        default="frame",
        help="IEMOCAP-shaped frame features (default) or MERTools-style utterance vectors",
    )
    parser.add_argument("--tmp", type=Path, help="parent folder for the temporary data")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="robustmer-load-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        features = FEATURES if args.level == "frame" else UTTERANCE_FEATURES
        store, files = build(tmp, args.n, args.seed, features)
        if hasattr(os, "sync"):
            os.sync()  # written pages are dirty until flushed, and DONTNEED skips dirty pages
        size = sum(p.stat().st_size for p in store_files(store))
        n_files = sum(len(v) for v in files.values())
        print(
            f"{args.n} utterances, {size / 1e9:.2f} GB of features; store and {n_files} .npy "
            f"files written (and flushed) in {time.perf_counter() - t0:.1f} s"
        )
        npy_all = [p for v in files.values() for p in v]
        readers: dict[str, tuple[Callable[[], Any], list[Path]]] = {
            "store_open": (lambda: load_store(store, read=False), store_files(store)),
            "store_read": (lambda: load_store(store, read=True), store_files(store)),
            "npy_files": (lambda: load_npy(files), npy_all),
        }
        results: dict[str, dict[str, float]] = {}
        for label, (fn, paths) in readers.items():
            cold = best_of(fn, args.repeats, lambda paths=paths: drop_cache(paths))
            fn()  # fill the cache
            warm = best_of(fn, args.repeats, None)
            results[label] = {"cold_s": cold, "warm_s": warm}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'reader':<12}{'cold s':>10}{'warm s':>10}{'x cold':>10}{'x warm':>10}")
    npy = results["npy_files"]
    for label, r in results.items():
        results[label]["speedup_cold"] = npy["cold_s"] / r["cold_s"]
        results[label]["speedup_warm"] = npy["warm_s"] / r["warm_s"]
        print(
            f"{label:<12}{r['cold_s']:>10.3f}{r['warm_s']:>10.3f}"
            f"{r['speedup_cold']:>10.1f}{r['speedup_warm']:>10.1f}"
        )
    print("x = npy_files time / reader time (target >= 10)")
    if args.json:
        payload = {"n": args.n, "level": args.level, "bytes": size, "files": n_files}
        payload["results"] = results
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
