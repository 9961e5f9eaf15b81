"""IMDer on the built-in corpus: accuracy and time against sampler and steps, and the zero ablation.

Trains `models.imder` of params.yaml once (MulT pretraining + IMDer, every fold and seed) on the
store of a project where the pipeline already ran (`dvc repro` or `snakemake`), then scores the
same checkpoints on the `missing_rate` condition with each sampler setting, and with
`recovery: false` (missing projections zeroed: the same weights without diffusion). The other
models' results of that project, when present, are printed alongside.

    .venv/bin/python benchmarks/imder_sampler_steps.py --project . --json /tmp/imder_steps.json
    .venv/bin/python benchmarks/imder_sampler_steps.py --project . --quick   # 1 seed, 4 settings
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = [  # (sampler, steps); the first is the params.yaml default (builtin_cpu)
    ("ode", 4),
    ("ode", 2),
    ("ode", 10),
    ("euler_maruyama", 10),
    ("euler_maruyama", 100),
    ("pc", 10),
]
QUICK = [("ode", 4), ("ode", 2), ("euler_maruyama", 10), ("euler_maruyama", 20)]
CONDITION = "missing_rate"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."), help="pipeline project folder")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--quick", action="store_true", help="one seed, four cheaper sampler settings")
    ap.add_argument("--work", type=Path, help="keep checkpoints here (default: a temp folder)")
    ap.add_argument("--params", type=Path, help="params file (default: the project's)")
    ap.add_argument("--threads", type=int, help="override the model's CPU threads (busy machine)")
    args = ap.parse_args()
    os.environ.setdefault("ROBUSTMER_NO_PROGRESS", "1")

    from robustmer.config import load_params, validate_params
    from robustmer.evaluation.runner import evaluate_model
    from robustmer.training.runner import pretrain_model, train_model

    project = args.project.resolve()
    base = load_params(args.params or project / "params.yaml")
    raw = copy.deepcopy(dict(base))
    if args.quick:
        raw["train"] = {**raw["train"], "seeds": raw["train"]["seeds"][:1]}
    if args.threads:
        entry = raw["models"]["imder"]
        for stage in ("pretrain", "train"):
            entry[stage] = {**(entry.get(stage) or {}), "num_threads": args.threads}
    params = validate_params(raw)
    store = project / "data" / "features" / params["dataset"]
    cond_dir = project / "data" / "corrupted" / params["dataset"] / CONDITION
    for path in (store / "store.json", cond_dir / "condition.json"):
        if not path.is_file():
            raise SystemExit(f"{path} missing: run `dvc repro` (or snakemake) in {project} first")
    work = args.work or Path(tempfile.mkdtemp(prefix="imder-steps-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")

    timings: dict[str, float] = {}
    started = time.perf_counter()
    pretrain_model(params, "imder", store, work / "imder.pretrain")
    timings["pretrain_s"] = time.perf_counter() - started
    started = time.perf_counter()
    train_model(params, "imder", store, work / "imder", pretrain_dir=work / "imder.pretrain")
    timings["train_s"] = time.perf_counter() - started

    settings = QUICK if args.quick else SETTINGS
    rows: list[dict[str, Any]] = []
    for sampler, steps, recovery in [*((s, n, True) for s, n in settings), ("-", 0, False)]:
        variant = copy.deepcopy(dict(params))
        options = variant["models"]["imder"]["options"]
        options.update(recovery=recovery)
        if recovery:
            options.update(sampler=sampler, steps=steps)
        tag = f"{sampler}-{steps}" if recovery else "zeroed"
        out = {k: work / "eval" / tag / f"{k}.out" for k in
               ("metrics", "scores", "predictions", "confusion_png", "confusion_csv")}  # fmt: skip
        t0 = time.perf_counter()
        result = evaluate_model(
            validate_params(variant), "imder", CONDITION, store, work / "imder", cond_dir, out
        )
        seconds = time.perf_counter() - t0
        levels = result["levels"]
        rows.append({
            "setting": tag,
            "eval_seconds": round(seconds, 1),
            "ua": {lv: round(v["ua"], 4) for lv, v in levels.items()},
            "ua_std": {lv: round(v["ua_std"], 4) for lv, v in levels.items()},
        })  # fmt: skip
        print(
            f"{tag:>20}: {seconds:6.1f}s  "
            + "  ".join(f"{lv}:{v['ua']:.3f}±{v['ua_std']:.3f}" for lv, v in levels.items()),
            flush=True,
        )

    others = {}
    for path in sorted((project / "results" / "metrics").glob(f"*/{CONDITION}.json")):
        got = json.loads(path.read_text())
        others[got["model"]] = {
            lv: (round(v["ua"], 4), round(v.get("ua_std", 0.0), 4))
            for lv, v in got["levels"].items()
        }
    for model, levels in others.items():
        print(
            f"{model:>20}: " + "  ".join(f"{lv}:{u:.3f}±{s:.3f}" for lv, (u, s) in levels.items())
        )
    report = {"timings": timings, "imder": rows, "others": others, "work": str(work)}
    print(json.dumps(timings))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
