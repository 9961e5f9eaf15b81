"""Time lost to an interruption at 50% of a training run: restart from scratch vs resume.

    .venv/bin/python benchmarks/interruption.py [--model fusion_mlp_moddrop] [--reps 2]

Runs `robustmer train MODEL` as SLURM would, in a scratch copy of the project that shares the
feature store of this checkout (run `robustmer acquire && robustmer extract` first). Per
repetition, interleaved:

1. an uninterrupted run (its wall time T);
2. a run sent SIGTERM once half of its (seed, fold) units are finished, then
   - "restart": the partial build is deleted and the model trained again from scratch (what a
     rerun did before training was resumable);
   - "resume": the rerun keeps the finished units and continues the one in progress.

Time lost = (time until the signal + the rerun) - T. Each resumed run is checked to end with
the checkpoints of the uninterrupted run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from robustmer.config import load_params  # noqa: E402
from robustmer.training.resume import building_dir  # noqa: E402


def train(work: Path, model: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "robustmer.cli", "train", model],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def finished(proc: subprocess.Popen[bytes]) -> float:
    start = time.perf_counter()
    if proc.wait() != 0:
        raise SystemExit(f"train failed with exit code {proc.returncode}")
    return time.perf_counter() - start


def digests(folder: Path) -> dict[str, str]:
    return {p.name + p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("seed_*/fold_*.pt"))}  # fmt: skip


def interrupted(work: Path, model: str, env: dict[str, str], half: int) -> float:
    """Start, SIGTERM once `half` units are done; the seconds until the process ended."""
    units = building_dir(work / "models" / model) / "resume" / "units"
    start = time.perf_counter()
    proc = train(work, model, env)
    while len(list(units.glob("*.json"))) < half:
        if proc.poll() is not None:
            raise SystemExit("the run ended before half of its units were done")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    if proc.wait() != 128 + signal.SIGTERM:
        raise SystemExit(f"expected exit code 143 after SIGTERM, got {proc.returncode}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fusion_mlp_moddrop")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    store = ROOT / "data" / "features" / params["dataset"]
    if not store.is_dir():
        raise SystemExit(f"{store}: no feature store; run `robustmer acquire && robustmer extract`")
    work = Path(tempfile.mkdtemp(prefix="interruption-"))
    (work / "data" / "features").mkdir(parents=True)
    os.symlink(store.resolve(), work / "data" / "features" / params["dataset"])
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
           "ROBUSTMER_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    cli = [sys.executable, "-m", "robustmer.cli"]
    subprocess.run([*cli, "pretrain", args.model], cwd=work, env=env, check=True, **quiet)
    target = work / "models" / args.model

    full = finished(train(work, args.model, env))  # also warms caches; not counted
    expected = digests(target)
    n_units = len(expected)
    half = n_units // 2
    lost: dict[str, list[float]] = {"restart": [], "resume": []}
    straight: list[float] = []
    for _ in range(args.reps):
        straight.append(finished(train(work, args.model, env)))
        for mode in ("restart", "resume"):
            shutil.rmtree(target, ignore_errors=True)
            until = interrupted(work, args.model, env, half)
            if mode == "restart":
                shutil.rmtree(building_dir(target))
            rerun = finished(train(work, args.model, env))
            if digests(target) != expected:
                raise SystemExit(f"{mode}: the checkpoints differ from the uninterrupted run")
            lost[mode].append(until + rerun)
    t = statistics.median(straight)
    print(f"model {args.model}: {n_units} units, interrupted after {half}; first run {full:.1f} s")
    print(f"uninterrupted: median {t:.1f} s over {len(straight)} runs {straight}")
    for mode, totals in lost.items():
        med = statistics.median(totals)
        print(f"{mode:8}: stop + rerun median {med:.1f} s, time lost {med - t:+.1f} s "
              f"({(med - t) / t:+.0%} of a run)")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
