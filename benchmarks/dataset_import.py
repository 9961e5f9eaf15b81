"""Import time of the feature-pack adapters on synthetic packs of realistic size.

    .venv/bin/python benchmarks/dataset_import.py [--n 20000] [--text-dim 768] [--json out.json]

Writes, in a temporary folder, (1) an MMSA aligned pickle with MOSI shapes (audio [N, 50, 5],
vision [N, 50, 20], BERT text [N, 50, text_dim], float32: about 3 GB at the defaults, printed
before it is written) and (2) a MERTools layout of N samples with three utterance-level feature
folders (eGeMAPS 88, HuBERT 768, CLIP 512: 3 N .npy files) and labels for half of them (the rest
is the unlabelled pool). Then times `convert_mmsa` and `convert_mertools` into a canonical store
(wall time, samples/s and files/s). The page cache is warm (the files were just written): the
figures are the adapters' own cost, not the disk's.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.adapters.mertools import convert_mertools, files_mertools
from robustmer.data.adapters.mmsa import convert_mmsa
from robustmer.io import atomic_dir

MER_DIRS = {"eGeMAPS_UTT": 88, "chinese-hubert-base-UTT": 768, "clip-vit-base-patch32-UTT": 512}
MER_CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")
SPLIT_SHARE = {"train": 0.585, "valid": 0.104}  # MOSI's 1284 / 229 / 686


def mmsa_bytes(n: int, seq: int, text_dim: int) -> int:
    return n * seq * (5 + 20 + text_dim) * 4


def write_mmsa(path: Path, n: int, seq: int, text_dim: int, seed: int) -> None:
    """A MOSI-shaped aligned pickle; arrays are freed once written."""
    rng = np.random.default_rng(seed)
    n_train = int(n * SPLIT_SHARE["train"])
    n_valid = int(n * SPLIT_SHARE["valid"])
    sizes = {"train": n_train, "valid": n_valid, "test": n - n_train - n_valid}
    data: dict[str, dict[str, Any]] = {}
    k = 0
    for split, size in sizes.items():
        audio = rng.standard_normal((size, seq, 5), dtype=np.float32)
        audio[rng.random((size, seq, 5)) < 0.001] = -np.inf
        data[split] = {
            "id": np.array([f"video{(k + i) // 20:05d}$_${(k + i) % 20}" for i in range(size)]),
            "raw_text": np.array([f"utterance {k + i}" for i in range(size)], dtype=object),
            "audio": audio,
            "vision": rng.standard_normal((size, seq, 20), dtype=np.float32),
            "text": rng.random((size, seq, text_dim), dtype=np.float32),
            "audio_lengths": rng.integers(1, seq + 1, size),
            "vision_lengths": rng.integers(1, seq + 1, size),
            "regression_labels": np.round(rng.uniform(-3, 3, size), 1).astype(np.float32),
        }
        k += size
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    del data
    gc.collect()


def write_mertools(root: Path, n: int, seed: int) -> int:
    """N samples x 3 utterance-level folders; labels for the first half. Returns the file count."""
    rng = np.random.default_rng(seed)
    names = [f"sample_{i:08d}" for i in range(n)]
    for d, dim in MER_DIRS.items():
        folder = root / "features" / d
        folder.mkdir(parents=True)
        block = rng.standard_normal((n, dim), dtype=np.float32)
        for name, row in zip(names, block, strict=True):
            np.save(folder / f"{name}.npy", row)
    labelled = names[: n // 2]
    pd.DataFrame(
        {
            "name": labelled,
            "discrete": [MER_CLASSES[i % len(MER_CLASSES)] for i in range(len(labelled))],
            "valence": np.round(rng.uniform(-5, 5, len(labelled)), 2),
        }
    ).to_csv(root / "label-disdim.csv", index=False)
    pd.DataFrame({"name": names, "chinese": ["文本"] * n}).to_csv(
        root / "transcription-merge.csv", index=False
    )
    return n * len(MER_DIRS)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def convert(fn: Callable[..., Any], source: Path, target: Path, options: dict[str, Any]) -> Any:
    with atomic_dir(target) as tmp:
        return fn(source, tmp, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="samples per pack (default 20000)")
    parser.add_argument("--text-dim", type=int, default=768, help="BERT dim of the MMSA pack")
    parser.add_argument("--seq", type=int, default=50, help="aligned sequence length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-mmsa", action="store_true", help="only the MERTools layout")
    parser.add_argument("--tmp", type=Path, help="parent folder for the temporary data")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="robustmer-import-", dir=args.tmp))
    rows: list[dict[str, Any]] = []
    try:
        if not args.skip_mmsa:
            size = mmsa_bytes(args.n, args.seq, args.text_dim)
            print(f"MMSA pickle: {args.n} samples, {size / 1e9:.2f} GB of float32 arrays")
            pkl = tmp / "aligned_50.pkl"
            t_write, _ = timed(lambda: write_mmsa(pkl, args.n, args.seq, args.text_dim, args.seed))
            print(f"  written in {t_write:.1f} s ({pkl.stat().st_size / 1e9:.2f} GB on disk)")
            options = {"dims": {"audio": 5, "video": 20, "text": args.text_dim}}
            t, summary = timed(lambda: convert(convert_mmsa, pkl, tmp / "mmsa_store", options))
            rows.append(
                {
                    "step": "convert_mmsa",
                    "samples": args.n,
                    "files": 1,
                    "bytes": pkl.stat().st_size,
                    "seconds": t,
                    "samples_per_s": args.n / t,
                    "files_per_s": 1 / t,
                    "splits": summary["splits"],
                }
            )
            shutil.rmtree(tmp / "mmsa_store")
            pkl.unlink()

        mer = tmp / "mer"
        print(f"MERTools layout: {args.n} samples x {len(MER_DIRS)} feature folders")
        t_write, n_files = timed(lambda: write_mertools(mer, args.n, args.seed))
        print(f"  {n_files} .npy files written in {t_write:.1f} s")
        t_list, files = timed(lambda: files_mertools(mer, {}))
        rows.append(
            {
                "step": "files_mertools",
                "samples": args.n,
                "files": len(files),
                "seconds": t_list,
                "samples_per_s": args.n / t_list,
                "files_per_s": len(files) / t_list,
            }
        )
        t, summary = timed(lambda: convert(convert_mertools, mer, tmp / "mer_store", {}))
        rows.append(
            {
                "step": "convert_mertools",
                "samples": args.n,
                "files": n_files,
                "seconds": t,
                "samples_per_s": args.n / t,
                "files_per_s": n_files / t,
                "unlabelled": summary["unlabelled"],
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'step':<18}{'samples':>9}{'files':>9}{'wall s':>9}{'samples/s':>12}{'files/s':>11}")
    for r in rows:
        print(
            f"{r['step']:<18}{r['samples']:>9}{r['files']:>9}{r['seconds']:>9.2f}"
            f"{r['samples_per_s']:>12.0f}{r['files_per_s']:>11.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
