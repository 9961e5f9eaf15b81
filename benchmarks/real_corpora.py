"""Baseline scores on the real corpus samples in ../shared/data (EmoDB, RAVDESS tables, MELD).

    .venv/bin/python benchmarks/real_corpora.py [--seeds 1 2 3] [--json out.json]

Each dataset goes through the pipeline's own stages (acquire with its adapter, extract,
validate, train, evaluate on the clean condition) in a temporary folder: EmoDB wavs with
openSMILE eGeMAPS functionals and speaker-independent folds; the RAVDESS summary tables as an
audio + video dataset with actor-independent folds; MELD transcripts (all 13,708) with MiniLM
sentence embeddings and the official splits. Prints UA / WA / weighted F1 (predictions pooled
over folds; mean ± std over training seeds) and the wall time of each dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.training.runner import train_model
from robustmer.validation.gate import run_gate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RUNS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "emodb": ("emodb", {"audio": "egemaps_functionals"}, {}),
    "ravdess_features": ("ravdess", {"audio": "summary", "video": "summary"}, {}),
    "meld": ("meld", {"text": "minilm"}, {"clips": False}),
}


def run(dataset: str, seeds: list[int], root: Path) -> dict[str, Any]:
    folder, features, options = RUNS[dataset]
    params = validate_params(
        {
            "seed": 5,
            "dataset": dataset,
            "device": "cpu",
            "acquire": {dataset: {"path": str(SHARED / folder), **options}},
            "train": {"epochs": 60, "patience": 15, "lr": 0.002, "seeds": seeds},
            "models": {"mlp": {"arch": "early_fusion", "features": features, "dropout": 0.3}},
            "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
        }
    )
    start = time.perf_counter()
    raw, store = root / "raw", root / "features"
    acquire(params, raw)
    extract(params, raw, store)
    run_gate(params, store, root / "validation.json", root / "docs")
    train_model(params, "mlp", store, root / "models")
    corrupt(params, "clean", store, root / "clean")
    out = {k: root / "results" / f"{k}.out" for k in ("metrics", "scores", "predictions")}
    out |= {"confusion_png": root / "cm.png", "confusion_csv": root / "cm.csv"}
    metrics = evaluate_model(params, "mlp", "clean", store, root / "models", root / "clean", out)
    level = metrics["levels"]["clean"]
    return {
        "dataset": dataset,
        "features": features,
        "n_classes": len(json.loads((store / "store.json").read_text())["classes"]),
        **{k: round(float(level[k]), 4) for k in ("ua", "ua_std", "wa", "wa_std")},
        "weighted_f1": round(float(level.get("weighted_f1", float("nan"))), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the real-corpus samples ship beside the project")
    os.environ.setdefault("ROBUSTMER_NO_PROGRESS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        for dataset in args.datasets:
            rows.append(run(dataset, args.seeds, Path(tmp) / dataset))
            r = rows[-1]
            print(
                f"{dataset:17} classes {r['n_classes']}  UA {r['ua']:.3f} ± {r['ua_std']:.3f}  "
                f"WA {r['wa']:.3f} ± {r['wa_std']:.3f}  wF1 {r['weighted_f1']:.3f}  "
                f"({r['seconds']:.0f} s)",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
