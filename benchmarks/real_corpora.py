"""Baseline scores on the real corpus samples in ../shared/data (EmoDB, RAVDESS tables, MELD).

    .venv/bin/python benchmarks/real_corpora.py [--seeds 1 2 3] [--json out.json]
        [--set models.mlp.num_layers=1 cv.val_speakers=2 ...]

Two models on the same store, folds and features: the default MLP (`early_fusion` with
params.yaml's `train` section and the `fusion_mlp` entry's hidden_dim, dropout and `train`
overrides) and the `linear` floor (logistic regression, docs/linear.md). The MLP defaults before
weight averaging: `--set models.mlp.train.patience=15 models.mlp.train.average_last=0`.

Each dataset goes through the pipeline's own stages (acquire with its adapter, extract,
validate, train, evaluate on the clean condition) in a temporary folder: EmoDB wavs with
openSMILE eGeMAPS functionals and speaker-independent folds; the RAVDESS summary tables as an
audio + video dataset with actor-independent folds; MELD transcripts (all 13,708) with MiniLM
sentence embeddings and the official splits. Prints UA / WA / weighted F1 (predictions pooled
over folds; mean ± std over training seeds), the fold mean of UA, and the wall time of each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.training.runner import train_model
from robustmer.validation.gate import run_gate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RUNS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "emodb": ("emodb", {"audio": "egemaps_functionals"}, {}),
    "ravdess_features": ("ravdess", {"audio": "summary", "video": "summary"}, {}),
    "meld": ("meld", {"text": "minilm"}, {"clips": False}),
}


def run(
    dataset: str, seeds: list[int], root: Path, overrides: Sequence[str] = ()
) -> list[dict[str, Any]]:
    folder, features, options = RUNS[dataset]
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    mlp = {k: v for k, v in defaults["models"]["fusion_mlp"].items()
           if k in ("hidden_dim", "dropout", "train")}  # fmt: skip
    entries: dict[str, Any] = {
        "seed": 5,
        "dataset": dataset,
        "device": "cpu",
        "acquire": {dataset: {"path": str(SHARED / folder), **options}},
        "cv": defaults["cv"],
        "train": {**defaults["train"], "seeds": seeds},
        "models": {
            "mlp": {"arch": "early_fusion", "features": features, **mlp},
            "linear": {"arch": "linear", "features": features},
        },
        "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
    }
    for item in overrides:  # dotted.key=yaml value, e.g. models.mlp.num_layers=1
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = entries
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    params = validate_params(entries)
    start = time.perf_counter()
    raw, store = root / "raw", root / "features"
    acquire(params, raw)
    extract(params, raw, store)
    run_gate(params, store, root / "validation.json", root / "docs")
    corrupt(params, "clean", store, root / "clean")
    prepared = time.perf_counter() - start
    rows = []
    for model in ("mlp", "linear"):
        start = time.perf_counter()
        train_model(params, model, store, root / "models" / model)
        out = {k: root / model / f"{k}.out" for k in ("metrics", "scores", "predictions")}
        out |= {"confusion_png": root / model / "cm.png", "confusion_csv": root / model / "cm.csv"}
        metrics = evaluate_model(
            params, model, "clean", store, root / "models" / model, root / "clean", out
        )
        level = metrics["levels"]["clean"]
        keys = ("ua", "ua_std", "ua_fold_mean", "ua_fold_std", "wa", "wa_std", "weighted_f1")
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "features": features,
                "n_classes": len(json.loads((store / "store.json").read_text())["classes"]),
                **{k: round(float(level[k]), 4) for k in keys},
                "seconds": round(time.perf_counter() - start, 1),
                "prepare_seconds": round(prepared, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--set", nargs="*", default=[], help="dotted.key=value overrides")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the real-corpus samples ship beside the project")
    os.environ.setdefault("ROBUSTMER_NO_PROGRESS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        for dataset in args.datasets:
            for r in run(dataset, args.seeds, Path(tmp) / dataset, args.set):
                rows.append(r)
                print(
                    f"{dataset:17} {r['model']:6} classes {r['n_classes']}  pooled UA "
                    f"{r['ua']:.3f} ± {r['ua_std']:.3f}  fold-mean UA {r['ua_fold_mean']:.3f} ± "
                    f"{r['ua_fold_std']:.3f}  WA {r['wa']:.3f}  wF1 {r['weighted_f1']:.3f}  "
                    f"(train+evaluate {r['seconds']:.0f} s)",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
