"""VAT on the built-in corpus: with and without pretraining and momentum distillation, against
early-fusion baselines, on clean data, under missing rates, audio noise and video blur.

Trains, on the same store, folds and seeds: VAT (full), w/o pretraining, w/o momentum
distillation (sharing the full model's pretraining), the audio+video early-fusion MLP on the
same two modalities and the tri-modal fusion MLP; scores each on params.yaml's `clean`,
`missing_rate`, `audio_snr` and `video_blur` conditions and prints UA per level (pooled over
folds, mean ± std over seeds), and the seconds per pretraining and fine-tuning epoch per fold
model.

    .venv/bin/python benchmarks/vat_ablation.py [--params params.yaml] [--seeds 1 2 3]

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
    "vat": {},
    "vat_no_pretraining": {"pretraining": False},
    "vat_no_distillation": {"distillation": False},
}
SHARES_PRETRAINING = {"vat_no_distillation": "vat"}
CONDITIONS = ("clean", "missing_rate", "audio_snr", "video_blur")


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
    av = copy.deepcopy(base["models"]["fusion_mlp"])
    av["features"] = {"audio": "egemaps_functionals", "video": "face_hog_mean"}
    models = {"fusion_mlp": base["models"]["fusion_mlp"], "av_mlp": av}
    for name, options in VARIANTS.items():
        entry = copy.deepcopy(base["models"]["vat"])
        entry["options"] = {**entry.get("options", {}), **options}
        models[name] = entry
    raw["models"] = models
    params = validate_params(raw)
    dataset = params["datasets"][0]
    store = paths.feature_dir(dataset)
    work = Path(tempfile.mkdtemp(prefix="vat-ablation-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
    for c in CONDITIONS:
        started = time.perf_counter()
        corrupt(params, c, store, work / "conditions" / c)
        print(f"condition {c}: {time.perf_counter() - started:.0f}s", flush=True)
    figures: dict = {}
    for name in models:
        source = SHARES_PRETRAINING.get(name, name)
        started = time.perf_counter()
        if source == name:
            pretrain_model(params, name, store, work / f"{name}.pretrain")
        pretrain_s = time.perf_counter() - started
        train_model(params, name, store, work / name, pretrain_dir=work / f"{source}.pretrain")
        train_s = time.perf_counter() - started - pretrain_s
        entry: dict = {"pretrain_s": round(pretrain_s, 1), "train_s": round(train_s, 1)}
        for c in CONDITIONS:
            kinds = ("metrics", "scores", "predictions", "confusion_png", "confusion_csv")
            out = {k: work / "eval" / c / f"{name}.{k}" for k in kinds}
            metrics = evaluate_model(params, name, c, store, work / name, work / "conditions" / c,
                                     out)  # fmt: skip
            entry[c] = {lv: (v["ua"], v["ua_std"]) for lv, v in metrics["levels"].items()
                        if "ua" in v}  # fmt: skip
        summary = json.loads((work / name / paths.SUMMARY_FILE).read_text())
        entry["train_s_per_epoch"] = _per_epoch(summary)
        pre = work / f"{name}.pretrain" / paths.PRETRAIN_SUMMARY
        if source == name and pre.is_file():
            folds = json.loads(pre.read_text()).get("folds") or []
            if folds and folds[0].get("epochs_run"):
                entry["pretrain_s_per_epoch"] = _per_epoch({"folds": folds})
        figures[name] = entry
        row = "  ".join(
            f"{c}[{lv}] {100 * m:.1f}±{100 * s:.1f}"
            for c in CONDITIONS for lv, (m, s) in entry[c].items()
        )  # fmt: skip
        print(f"{name:20s} pretrain {pretrain_s:.0f}s train {train_s:.0f}s "
              f"s/epoch pre {entry.get('pretrain_s_per_epoch')} fine {entry['train_s_per_epoch']}",
              flush=True)  # fmt: skip
        print(f"   UA {row}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


def _per_epoch(summary: dict) -> float:
    """Mean seconds per epoch of a fold model (its fit time over the epochs it ran)."""
    folds = [f for f in summary["folds"] if f.get("epochs_run")]
    return round(float(np.mean([f["seconds"] / f["epochs_run"] for f in folds])), 3)


if __name__ == "__main__":
    main()
