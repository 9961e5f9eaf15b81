"""Fingerprint of every model on a tiny configuration: metrics and checkpoint hashes.

A refactor must not move numbers. Run this before and after (on the same machine) and diff:

    .venv/bin/python scripts/fingerprint.py /tmp/before.json
    ... change the code ...
    .venv/bin/python scripts/fingerprint.py /tmp/after.json
    diff /tmp/before.json /tmp/after.json

It runs the CLI stages (acquire, extract, pretrain, train, corrupt, evaluate) in a temporary
copy of the project with a tiny built-in corpus, one training seed and short training, over every
model of params.yaml (plus any given with --models), and records each checkpoint's sha256, the
sha256 of its weights alone (stable when only checkpoint metadata changes), the best epochs and
the evaluated metrics of the clean and missing-rate conditions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_rate": {"kind": "missing_rate", "levels": [0.0, 0.5]},
}


def tiny_params(models: list[str] | None) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["acquire"]["builtin"].update(
        n_speakers=6, utterances_per_speaker=12, n_folds=3, unlabelled_fraction=0.0
    )  # the same labelled rows as before the pool existed
    params["train"].update(epochs=6, patience=3, seeds=[1])
    if models:
        params["models"] = {m: params["models"][m] for m in models}
    for entry in params["models"].values():
        if entry.get("arch") in ("nmer", "imder"):
            entry["pretrain"] = {"epochs": 3, "batch_size": 8, "decay_epochs": 1}
            entry["train"] = {"epochs": 3, "batch_size": 8, "decay_epochs": 1}
        if entry.get("arch") == "imder":
            entry["options"] = {"steps": 2}
    params["corrupt"]["conditions"] = CONDITIONS
    return params


def weights_hash(path: Path) -> str:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fingerprint-"))
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(ROOT / "src", work / "src")  # not needed to run; keeps the copy legible
    params = tiny_params(args.models)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{work}/m.db"}
    cli = [sys.executable, "-m", "robustmer.cli"]

    def run(*args: str) -> None:
        subprocess.run([*cli, *args], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    run("acquire")
    run("extract")
    for condition in CONDITIONS:
        run("corrupt", condition)
    result: dict = {}
    for model in params["models"]:
        run("pretrain", model)
        run("train", model)
        entry: dict = {"checkpoints": {}, "metrics": {}}
        for stage_dir in (work / "models" / f"{model}.pretrain", work / "models" / model):
            for ckpt in sorted(stage_dir.glob("seed_*/fold_*.pt")):
                rel = ckpt.relative_to(work / "models").as_posix()
                entry["checkpoints"][rel] = {
                    "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                    "weights": weights_hash(ckpt),
                }
        summary = json.loads((work / "models" / model / "train_summary.json").read_text())
        entry["best_epochs"] = [f["best_epoch"] for f in summary["folds"]]
        for condition in CONDITIONS:
            run("evaluate", model, condition)
            metrics = work / "results" / "metrics" / model / f"{condition}.json"
            entry["metrics"][condition] = json.loads(metrics.read_text())["levels"]
        result[model] = entry
        print(model, entry["best_epochs"], flush=True)
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
