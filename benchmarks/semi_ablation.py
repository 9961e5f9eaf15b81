"""The MER2024-SEMI ablation on the built-in corpus with its default unlabelled pool.

Trains, on the same store, folds, labelled rows and seeds: SEMI (full), w/o contrastive
pretraining, w/o pseudo-labels, w/o oversampling, and the supervised fusion baselines
(early-fusion MLP, MER2024 attention); scores each on the clean condition and prints WAF and UA
(pooled over folds, mean ± std over seeds), the pseudo-labels per class with their accuracy
against the withheld labels, and the time of pretraining and of one self-training round (per
fold model, and in all).

    .venv/bin/python benchmarks/semi_ablation.py [--params params.yaml] [--seeds 1 2 3]

Needs the built-in corpus extracted (`dvc repro extract` or `robustmer acquire && robustmer
extract`); writes into a temporary folder, not into models/ or results/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from robustmer import paths
from robustmer.config import load_params, validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.evaluation.runner import evaluate_model
from robustmer.training.runner import pretrain_model, train_model

VARIANTS = {
    "semi": {},
    "semi_no_contrastive": {"contrastive_pretraining": False},
    "semi_no_pseudo": {"pseudo_labels": False},
    "semi_no_oversampling": {"oversample": False},
}
BASELINES = ("fusion_mlp", "mer2024_attention")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON with every figure")
    args = parser.parse_args()
    base = load_params(args.params)
    raw = copy.deepcopy(base)
    if args.seeds:
        raw["train"]["seeds"] = args.seeds
    models = {name: raw["models"][name] for name in BASELINES}
    for name, options in VARIANTS.items():
        entry = copy.deepcopy(base["models"]["semi"])
        entry["options"] = {**entry.get("options", {}), **options}
        models[name] = entry
    raw["models"] = models
    params = validate_params(raw)
    store = paths.feature_dir(params["dataset"])
    work = Path(tempfile.mkdtemp(prefix="semi-ablation-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
    corrupt(params, "clean", store, work / "clean")
    figures: dict = {}
    for name in models:
        started = time.perf_counter()
        pretrain_model(params, name, store, work / f"{name}.pretrain")
        pretrain_s = time.perf_counter() - started
        train_model(params, name, store, work / name, pretrain_dir=work / f"{name}.pretrain")
        train_s = time.perf_counter() - started - pretrain_s
        out = {k: work / "eval" / f"{name}.{k}" for k in
               ("metrics", "scores", "predictions", "confusion_png", "confusion_csv")}  # fmt: skip
        metrics = evaluate_model(params, name, "clean", store, work / name, work / "clean", out)
        level = metrics["levels"]["clean"]
        summary = json.loads((work / name / paths.SUMMARY_FILE).read_text())
        entry = {
            "waf": (level["weighted_f1"], level["weighted_f1_std"]),
            "ua": (level["ua"], level["ua_std"]),
            "pretrain_s": round(pretrain_s, 1),
            "train_s": round(train_s, 1),
            "n_fold_models": len(summary["folds"]),
        }
        # Per fold model: one pretraining (none for one-stage models), round 0, each later round.
        folds = json.loads((work / f"{name}.pretrain" / paths.PRETRAIN_SUMMARY).read_text())
        if folds.get("folds"):
            entry["pretrain_s_per_fold_model"] = round(
                float(np.mean([f["seconds"] for f in folds["folds"]])), 2
            )
        extras = [f.get("extra") or {} for f in summary["folds"]]
        if any("round_0_seconds" in e for e in extras):
            entry["round_0_s_per_fold_model"] = round(
                float(np.mean([e["round_0_seconds"] for e in extras])), 2
            )
        rounds = [r for e in extras for r in e.get("pseudo_labels", [])]
        if rounds:
            entry["round_s_per_fold_model"] = round(
                float(np.mean([r["seconds"] for r in rounds])), 2
            )
            classes = summary["classes"]
            kept = {c: int(sum(r["counts"][c] for r in rounds)) for c in classes}
            right = {c: int(sum(r.get("correct", {}).get(c, 0) for r in rounds)) for c in classes}
            entry["pseudo"] = {c: (kept[c], right[c] / kept[c] if kept[c] else float("nan"))
                               for c in classes}  # fmt: skip
            entry["pool_per_fold"] = float(np.mean([r["n_pool"] for r in rounds]))
        figures[name] = entry
        print(f"{name:22s} WAF {100 * entry['waf'][0]:.1f} ± {100 * entry['waf'][1]:.1f}  "
              f"UA {100 * entry['ua'][0]:.1f} ± {100 * entry['ua'][1]:.1f}  "
              f"pretrain {pretrain_s:.0f}s train {train_s:.0f}s", flush=True)  # fmt: skip
        per_model = {k: entry[k] for k in ("pretrain_s_per_fold_model", "round_0_s_per_fold_model",
                                            "round_s_per_fold_model") if k in entry}  # fmt: skip
        if per_model:
            print("   seconds per fold model:", per_model, flush=True)
        if "pseudo" in entry:
            print("   pseudo-labels (kept, accuracy):",
                  {c: (n, round(a, 3)) for c, (n, a) in entry["pseudo"].items()})  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
