"""What one grid cell costs: `robustmer evaluate MODEL CONDITION` and `robustmer --help`, this
checkout against another revision, interleaved in one run.

    .venv/bin/python benchmarks/cell_startup.py [--base REV] [--runs 5] [--json out.json]

Builds a small built-in project once (6 speakers x 12 utterances, fusion_mlp, 5 epochs, the
clean and missing_rate conditions) with this checkout, then alternates the code versions on the
same cell, so drift on a shared machine hits them alike: `base` (`--base` from a temporary git
worktree, put first on PYTHONPATH) and `this` each in a process of its own, and `warm` (this
checkout through the launcher, as the `robustmer` console script runs it, with its stage server
already started: robustmer/launcher.py). Prints min and median wall seconds of each command and,
for the cell, the share of its time spent in imports (`python -X importtime`, this checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CELL = ("evaluate", "fusion_mlp", "missing_rate")


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", GX_ANALYTICS_ENABLED="false",
               ROBUSTMER_NO_PROGRESS="1")  # fmt: skip
    return env


def _cli(args: list[str], cwd: Path, src: Path, entry: str = "robustmer.cli") -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", entry, *args], cwd=cwd, env=_env(src),
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"robustmer {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def _wait_for_server(root: Path, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not list(root.glob("robustmer-*/*.sock")):
        if time.monotonic() > end:
            raise SystemExit("the stage server did not start")
        time.sleep(0.1)


def _stop_servers(root: Path) -> None:
    for lock in root.glob("robustmer-*/*.lock"):
        with contextlib.suppress(ValueError, IndexError, OSError):
            os.kill(int(lock.read_text().split()[0]), signal.SIGTERM)


def _project(root: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["acquire"]["builtin"].update(n_speakers=6, utterances_per_speaker=12, n_folds=3)
    params["models"] = {"fusion_mlp": params["models"]["fusion_mlp"]}
    params["train"].update(epochs=5, seeds=[1])
    params["train"].pop("workers", None)  # a key revisions before it refuse
    conditions = params["corrupt"]["conditions"]
    params["corrupt"]["conditions"] = {k: conditions[k] for k in ("clean", "missing_rate")}
    project = root / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in (["acquire"], ["extract"], ["validate"], ["corrupt", "missing_rate"],
                  ["train", "fusion_mlp"]):  # fmt: skip
        _cli(stage, project, ROOT / "src")
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the revision to compare with")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = root / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base],
                       cwd=ROOT, check=True)  # fmt: skip
        try:
            project = _project(root)
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project}/mlflow.db"
            os.environ.update(ROBUSTMER_WARM_DIR=str(root), ROBUSTMER_WARM_IDLE_S="600")
            versions = {
                "base": (base / "src", "robustmer.cli"),
                "this": (ROOT / "src", "robustmer.cli"),
                "warm": (ROOT / "src", "robustmer.launcher"),
            }
            _cli(list(CELL), project, ROOT / "src", "robustmer.launcher")  # starts the server
            _wait_for_server(root)
            times: dict[str, dict[str, list[float]]] = {
                v: {"cell": [], "help": []} for v in versions
            }
            for _ in range(args.runs):
                for name, (src, entry) in versions.items():
                    times[name]["cell"].append(_cli(list(CELL), project, src, entry))
                    times[name]["help"].append(_cli(["--help"], project, src, entry))
            _stop_servers(root)
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "robustmer.cli", *CELL], cwd=project,
                env=_env(ROOT / "src"), capture_output=True, text=True,
            )  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    top = [line for line in proc.stderr.splitlines()
           if line.startswith("import time:") and line.split("|")[1].strip().isdigit()]  # fmt: skip
    imports_s = sum(int(x.split("|")[1]) for x in top if x.split("|")[2].startswith(" ") and
                    not x.split("|")[2].startswith("  ")) / 1e6  # fmt: skip
    rows = {}
    for name, kinds in times.items():
        rows[name] = {k: {"min": round(min(v), 3), "median": round(statistics.median(v), 3)}
                      for k, v in kinds.items()}  # fmt: skip
        what = {"base": args.base, "this": "working tree", "warm": "working tree, warm"}[name]
        print(f"{name:5} ({what}): evaluate cell "
              f"min {rows[name]['cell']['min']:.2f} s, median {rows[name]['cell']['median']:.2f} "
              f"s; --help min {rows[name]['help']['min']:.2f} s, median "
              f"{rows[name]['help']['median']:.2f} s")  # fmt: skip
    print(f"imports of one cell (this checkout, -X importtime top level): {imports_s:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "base": args.base, **rows}, indent=2))


if __name__ == "__main__":
    main()
