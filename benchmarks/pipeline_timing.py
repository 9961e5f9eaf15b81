"""Wall time of the default pipeline: `dvc repro` from a clean clone, a no-op rerun, per stage.

    .venv/bin/python benchmarks/pipeline_timing.py [--params tiny.yaml] [--json out.json]

Clones the committed HEAD of this repository into a temporary folder (so nothing produced
here is reused), runs `dvc repro` with this virtual environment's tools on PATH, parses the
per-stage times the CLI prints, reruns `dvc repro` (nothing to do) and prints the accuracies of
every model from the clone's metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_RE = re.compile(r"Running stage '([^']+)'")
TIME_RE = re.compile(r"\[robustmer\] (\w+) finished in ([0-9.]+) s")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", GX_ANALYTICS_ENABLED="false")
    env["ROBUSTMER_NO_PROGRESS"] = "1"
    return env


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stdout[-8000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return elapsed, proc.stdout


def stage_times(log: str) -> list[tuple[str, float]]:
    """Pair each `Running stage 'X'` line of DVC with the next CLI timing line."""
    times, current = [], None
    for line in log.splitlines():
        if m := STAGE_RE.search(line):
            current = m.group(1)
        elif (m := TIME_RE.search(line)) and current:
            times.append((current, float(m.group(2))))
            current = None
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, help="params.yaml to use instead of the default")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the clone and print its path")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="robustmer-bench-"))
    clone = tmp / "clone"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if args.params:
            shutil.copy(args.params, clone / "params.yaml")
        full, log = _run(["dvc", "repro"], clone)
        noop, _ = _run(["dvc", "repro"], clone)
        stages = stage_times(log)
        metrics = {
            p.stem: json.loads(p.read_text())
            for p in sorted((clone / "results/metrics").glob("*.json"))
        }
        figures = {
            "dvc_repro_clean_s": round(full, 1),
            "dvc_repro_noop_s": round(noop, 2),
            "stages_s": {name: round(t, 1) for name, t in stages},
            "accuracy": {
                m: {k: round(v[k], 4) for k in ("wa", "ua", "weighted_f1", "macro_f1")}
                for m, v in metrics.items()
            },
        }
        print(f"dvc repro from a clean clone: {full:.1f} s; no-op dvc repro: {noop:.2f} s")
        for name, t in stages:
            print(f"  {name:28s} {t:7.1f} s")
        print(f"{'model':20s} {'WA':>7s} {'UA':>7s} {'WF1':>7s} {'MF1':>7s}")
        for m, v in figures["accuracy"].items():
            cells = " ".join(f"{v[k]:7.4f}" for k in ("wa", "ua", "weighted_f1", "macro_f1"))
            print(f"{m:20s} {cells}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"clone kept at {clone}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
