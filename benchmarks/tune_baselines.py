"""The default MLP against the tuned MLP (the MERTools protocol: random trials over its grid)
and the `linear` floor, on the same store, features, folds and seeds; and trial throughput with
one and two workers.

    .venv/bin/python benchmarks/tune_baselines.py [--datasets builtin emodb] [--trials 50]
    .venv/bin/python benchmarks/tune_baselines.py --throughput 6 --rounds 2

- builtin: the project's extracted store (data/features/builtin; run `dvc repro extract` first),
  the tri-modal `fusion_mlp`;
- emodb: the EmoDB sample in ../shared/data (acquired and extracted into a temporary folder),
  eGeMAPS functionals, speaker-independent folds.

Each trial trains every fold and seed and is scored on the validation speakers only; the tuned
model is then trained with the best trial's values and, like the other two, scored once on the
test folds (UA pooled over folds, mean ± std over seeds). With --throughput, studies of N trials
run alternately with one and two workers (interleaved, `--rounds` each) and their trials per
minute are printed.
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

from robustmer import paths
from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.evaluation.runner import evaluate_model
from robustmer.training.runner import train_model
from robustmer.tuning.space import with_values
from robustmer.tuning.study import tune_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# --space wide: beyond the MERTools grid, the knobs of docs/linear.md's MLP experiments.
WIDE = {
    "hidden_dim": {"choices": [32, 64, 128, 256]},
    "dropout": {"low": 0.1, "high": 0.6, "step": 0.1},
    "num_layers": {"low": 1, "high": 3, "int": True},
    "train.lr": {"low": 1.0e-4, "high": 3.0e-3, "log": True},
    "train.weight_decay": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
    "train.batch_size": {"choices": [16, 32, 64]},
}


def project(
    dataset: str, seeds: list[int], work: Path, space: str = "mertools", val_speakers: int = 0
) -> tuple[dict[str, Any], Path]:
    """Plain params (MLP, linear, the MERTools space for the MLP) and the store to read."""
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    if dataset == "builtin":
        features = dict(defaults["models"]["fusion_mlp"]["features"])
        store = ROOT / paths.feature_dir("builtin")
        raw: dict[str, Any] = {"seed": defaults["seed"], "dataset": "builtin"}
    else:
        features = {"audio": "egemaps_functionals"}
        store = work / "features"
        raw = {"seed": 5, "dataset": "emodb", "acquire": {"emodb": {"path": str(SHARED / "emodb")}}}
    mlp = {k: defaults["models"]["fusion_mlp"][k] for k in ("hidden_dim", "dropout")}
    raw |= {
        "device": "cpu",
        "cv": {**defaults["cv"], **({"val_speakers": val_speakers} if val_speakers else {})},
        "train": {**defaults["train"], "seeds": seeds},
        "models": {
            "mlp": {"arch": "early_fusion", "features": features, **mlp},
            "linear": {"arch": "linear", "features": features},
        },
        "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
        "tune": {"models": ["mlp"],
                 "spaces": {"mlp": WIDE if space == "wide"
                            else defaults["tune"]["spaces"]["audio_mlp"]}},
    }  # fmt: skip
    if dataset != "builtin":
        from robustmer.data.acquire import acquire
        from robustmer.features.extract import extract

        params = validate_params(raw)
        acquire(params, work / "raw")
        extract(params, work / "raw", store)
    return raw, store


def test_ua(raw: dict[str, Any], model: str, store: Path, work: Path, tag: str) -> dict[str, float]:
    # The values are already in `raw` (the tuned run has the best trial's): nothing to apply.
    params = validate_params({**raw, "tune": {**raw["tune"], "models": []}}, tuned=False)
    train_model(params, model, store, work / tag)
    out = {k: work / f"{tag}.{k}" for k in
           ("metrics", "scores", "predictions", "confusion_png", "confusion_csv")}  # fmt: skip
    level = evaluate_model(params, model, "clean", store, work / tag, work / "clean", out)
    level = level["levels"]["clean"]
    return {"ua": level["ua"], "ua_std": level["ua_std"], "ua_fold_mean": level["ua_fold_mean"]}


def compare(
    dataset: str, trials: int, seeds: list[int], work: Path, space: str, val_speakers: int
) -> dict[str, Any]:
    raw, store = project(dataset, seeds, work, space, val_speakers)
    corrupt(validate_params(raw), "clean", store, work / "clean")
    started = time.perf_counter()
    summary = tune_model(raw, "mlp", dataset, store, work / "tune", best_file=work / "best.yaml",
                         trials=trials)  # fmt: skip
    tune_s = time.perf_counter() - started
    best = summary["best"]
    tuned = with_values(raw, "mlp", best["params"])
    out = {
        "dataset": dataset,
        "trials": trials,
        "tune_seconds": round(tune_s, 1),
        "best_trial": best,
        "default_mlp": test_ua(raw, "mlp", store, work, "default"),
        "tuned_mlp": test_ua(tuned, "mlp", store, work, "tuned"),
        "linear": test_ua(raw, "linear", store, work, "linear"),
    }
    default_val = json.loads((work / "default" / paths.SUMMARY_FILE).read_text())["folds"]
    out["default_mlp"]["val_ua"] = sum(f["val"]["val_ua"] for f in default_val) / len(default_val)
    return out


def throughput(trials: int, rounds: int, seeds: list[int], work: Path) -> dict[str, list[float]]:
    """Trials per minute of a study of `trials` trials, alternating one and two workers."""
    from robustmer.workers import worker_pool

    raw, store = project("builtin", seeds, work)
    rates: dict[str, list[float]] = {"1": [], "2": []}
    for r in range(rounds):
        for workers in (1, 2):
            tune_dir = work / f"tp_{r}_{workers}"
            args = (raw, "mlp", "builtin", store, tune_dir)
            options = {"best_file": tune_dir / "best.yaml", "trials": trials}
            started = time.perf_counter()
            if workers == 1:
                tune_model(*args, **options)
            else:
                with worker_pool(workers) as pool:
                    for f in [pool.submit(tune_model, *args, **options) for _ in range(workers)]:
                        f.result()
            minutes = (time.perf_counter() - started) / 60
            rates[str(workers)].append(round(trials / minutes, 2))
            print(f"round {r}: {workers} worker(s): {trials} trials in {minutes * 60:.0f} s "
                  f"({trials / minutes:.1f} trials/min)", flush=True)  # fmt: skip
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["builtin", "emodb"])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--throughput", type=int, default=0, help="trials per throughput study")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--space", choices=["mertools", "wide"], default="mertools")
    parser.add_argument("--val-speakers", type=int, default=0, help="cv.val_speakers (0: params)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("ROBUSTMER_NO_PROGRESS", "1")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        if args.throughput:
            results["throughput"] = throughput(args.throughput, args.rounds, args.seeds,
                                               Path(tmp) / "throughput")  # fmt: skip
        else:
            for ds in args.datasets:
                r = compare(ds, args.trials, args.seeds, Path(tmp) / ds, args.space,
                            args.val_speakers)  # fmt: skip
                results[ds] = r
                print(f"{ds}: best trial {r['best_trial']['number']} val UA "
                      f"{r['best_trial']['value']:.3f} {r['best_trial']['params']} "
                      f"(search {r['tune_seconds']:.0f} s)", flush=True)  # fmt: skip
                for m in ("default_mlp", "tuned_mlp", "linear"):
                    v = r[m]
                    print(f"   {m:12s} test UA pooled {v['ua']:.3f} ± {v['ua_std']:.3f}  "
                          f"fold mean {v['ua_fold_mean']:.3f}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
