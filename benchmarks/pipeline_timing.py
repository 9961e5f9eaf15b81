"""Wall time of the default pipeline: `dvc repro` from a clean clone, a no-op rerun, per stage.

    .venv/bin/python benchmarks/pipeline_timing.py [--params tiny.yaml] [--json out.json]

Clones the committed HEAD of this repository into a temporary folder (so nothing produced
here is reused), runs `dvc repro` with this virtual environment's tools on PATH, parses the
per-stage times the CLI prints (and their sum per stage kind: the robustness grid is the corrupt,
evaluate and report stages), reruns `dvc repro` (nothing to do) and prints the robustness table
(UA mean ± std over folds and seeds per model, condition and level) from the clone's report.
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

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STAGE_RE = re.compile(r"Running stage '([^']+)'")
TIME_RE = re.compile(r"\[robustmer\] (\w+) finished in ([0-9.]+) s")


def _env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The venv installs this checkout in editable mode; the clone must run its own code.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd / "src"), env.get("PYTHONPATH")]))
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", GX_ANALYTICS_ENABLED="false")
    env["ROBUSTMER_NO_PROGRESS"] = "1"
    return env


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
        kinds: dict[str, float] = {}
        for name, t in stages:
            kinds[name.split("@")[0]] = kinds.get(name.split("@")[0], 0.0) + t
        report = next(clone.glob("results/*/report"))
        summary = pd.read_csv(report / "summary.csv", dtype={"level": str})
        ua = summary[summary["metric"] == "ua"]
        table: dict[str, dict[str, list[float]]] = {}
        for r in ua.itertuples():
            cell = [round(r.mean, 4), round(r.std, 4)]
            table.setdefault(f"{r.condition}/{r.level}", {})[r.model] = cell
        figures = {
            "dvc_repro_clean_s": round(full, 1),
            "dvc_repro_noop_s": round(noop, 2),
            "stage_kinds_s": {k: round(v, 1) for k, v in kinds.items()},
            "grid_s": round(sum(kinds.get(k, 0.0) for k in ("corrupt", "evaluate", "report")), 1),
            "stages_s": {name: round(t, 1) for name, t in stages},
            "ua_mean_std": table,
        }
        print(f"dvc repro from a clean clone: {full:.1f} s; no-op dvc repro: {noop:.2f} s")
        for kind, t in kinds.items():
            print(f"  {kind:12s} {t:7.1f} s (sum over its stages)")
        print(f"  robustness grid (corrupt + evaluate + report): {figures['grid_s']} s")
        models = list(dict.fromkeys(ua["model"]))
        print(f"UA (mean ± std over folds and seeds)\n{'condition/level':24s} "
              + " ".join(f"{m[:18]:>18s}" for m in models))  # fmt: skip
        for key, row in table.items():
            cells = " ".join(
                f"{row[m][0]:8.3f} ± {row[m][1]:.3f}" if m in row else f"{'-':>18s}" for m in models
            )
            print(f"{key:24s} {cells}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"clone kept at {clone}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
