"""Frame pooling for frame-level LSTMs: the MER2024 attention model over eGeMAPS LLD frames
(100 Hz) with `options.max_frames` 0 (every frame), 50 and 20, against the same model on the
utterance functionals.

    .venv/bin/python benchmarks/frame_pooling.py [--dataset emodb|builtin] [--seeds 1]
        [--max-frames 0 50 20] [--json out.json]

EmoDB comes from ../shared/data/emodb (535 utterances, 10 speakers, 5 speaker folds); `builtin`
is the default built-in corpus. Each variant trains with params.yaml's `train` section on the
same store and folds and is scored on the clean condition; printed: training seconds per fold
model, pooled UA (mean ± std over seeds) and fold-mean UA. Variants run in one process, one
after the other, in the order given (rerun with another order to check for drift).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.training.runner import train_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def params_for(dataset: str, seeds: list[int], variants: dict[str, dict[str, Any]]) -> dict:
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    acquire_cfg = (
        {"path": str(SHARED / "emodb")} if dataset == "emodb" else defaults["acquire"]["builtin"]
    )
    return validate_params(
        {
            "seed": 5,
            "dataset": dataset,
            "device": "cpu",
            "acquire": {dataset: acquire_cfg},
            "extract": {"audio": {"egemaps": {"kind": "opensmile"}}, "video": {}, "text": {}},
            "cv": defaults["cv"],
            "train": {**defaults["train"], "seeds": seeds},
            "models": variants,
            "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["emodb", "builtin"], default="emodb")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--max-frames", type=int, nargs="+", default=[0, 50, 20])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.dataset == "emodb" and not (SHARED / "emodb").is_dir():
        raise SystemExit(f"{SHARED / 'emodb'} is absent: the EmoDB sample ships beside the project")
    os.environ.setdefault("ROBUSTMER_NO_PROGRESS", "1")
    entry = {"arch": "mer2024_attention", "hidden_dim": 128, "dropout": 0.3}
    variants: dict[str, dict[str, Any]] = {
        "utterance": {**entry, "features": {"audio": "egemaps_functionals"}},
    }
    for n in args.max_frames:
        variants[f"lld_max{n}"] = {
            **entry, "features": {"audio": "egemaps_lld"}, "options": {"max_frames": n},
        }  # fmt: skip
    params = params_for(args.dataset, args.seeds, variants)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
        acquire(params, root / "raw")
        extract(params, root / "raw", root / "features")
        corrupt(params, "clean", root / "features", root / "clean")
        for name in variants:
            start = time.perf_counter()
            train_model(params, name, root / "features", root / name)
            seconds = time.perf_counter() - start
            summary = json.loads((root / name / "train_summary.json").read_text())
            out = {k: root / "eval" / name / f"{k}.out" for k in ("metrics", "scores",
                                                                    "predictions")}  # fmt: skip
            out |= {"confusion_png": root / "eval" / name / "cm.png",
                    "confusion_csv": root / "eval" / name / "cm.csv"}  # fmt: skip
            level = evaluate_model(params, name, "clean", root / "features", root / name,
                                   root / "clean", out)["levels"]["clean"]  # fmt: skip
            row = {
                "variant": name,
                "train_s_per_fold_model": round(seconds / len(summary["folds"]), 2),
                "ua": round(level["ua"], 4),
                "ua_std": round(level["ua_std"], 4),
                "ua_fold_mean": round(level["ua_fold_mean"], 4),
            }
            rows.append(row)
            print(f"{args.dataset} {name:12} train {row['train_s_per_fold_model']:7.2f} s per "
                  f"fold model  UA {row['ua']:.3f} ± {row['ua_std']:.3f}  fold-mean UA "
                  f"{row['ua_fold_mean']:.3f}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
