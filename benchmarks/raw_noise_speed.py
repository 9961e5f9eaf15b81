"""What one raw-noise level costs against extracting the same files clean, this checkout and
another revision, interleaved.

    .venv/bin/python benchmarks/raw_noise_speed.py [--base REV] [--rounds 2]
        [--datasets builtin emodb] [--json out.json]

Per dataset (the built-in corpus, 600 utterances, 180 labelled; the EmoDB sample in
../shared/data, 535 files, when present), a store is prepared once with this checkout (acquire,
extract with the default eGeMAPS entry). Then, per round, in separate processes and in turn:

  clean     the audio entries of `extract` on the labelled files (`extract_modality`, workers
            as in params.yaml, no cache): what the level is compared with; a level corrupts
            those only (the built-in corpus's 420 unlabelled pool files keep their clean
            features, docs/robustness.md), all 535 on EmoDB;
  this      one `audio_snr` level (babble at 10 dB) through `build_overlay`, this checkout;
  base      the same level with `--base` (a temporary git worktree, first on PYTHONPATH).

Prints min seconds of each and the ratios level / clean (target: at most 1.3) and this / base.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LEVEL = "10"

WORK = """
import sys
import time
from pathlib import Path
from robustmer.config import validate_params
from robustmer.corruption.conditions import Condition, build_records
from robustmer.data.store import FeatureStore
import yaml
params = validate_params(yaml.safe_load(Path(sys.argv[2]).read_text()))
store = FeatureStore(Path(sys.argv[3]))
started = time.perf_counter()
if sys.argv[1] == "clean":
    from robustmer.features.extract import extract_modality
    rows = store.manifest[store.manifest["label"].fillna("") != ""]  # the rows a level corrupts
    paths = [Path(p) for p in rows["audio_path"]]
    ids = list(rows["sample_id"])
    extract_modality("audio", paths, params["extract"], sample_ids=ids,
                     workers=params["extract"]["workers"], cache=None)
else:
    from robustmer.corruption.raw_stage import build_overlay
    cond = Condition.from_params(params, "audio_snr")
    records = build_records(cond, store.manifest, params["seed"], store.modalities())
    level = records[records["level"] == sys.argv[5]].reset_index(drop=True)
    build_overlay(params, cond, level, store, Path(sys.argv[4]), ["audio"])
print(time.perf_counter() - started)
"""


def _params(dataset: str) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"] = [dataset]
    params["device"] = "cpu"
    params["extract"].update(text={}, video={})  # the audio entries only
    params["extract"]["cache"] = False
    params["train"].pop("workers", None)  # not read here, and unknown to revisions before it
    params["corrupt"]["conditions"] = {
        "audio_snr": {"kind": "audio_noise", "noise": "babble", "levels": [int(LEVEL)]}
    }
    if dataset == "emodb":
        params["acquire"] = {"emodb": {"path": str(SHARED / "emodb")}}
    return params


def _prepare(dataset: str, root: Path) -> tuple[Path, Path]:
    from robustmer.config import validate_params
    from robustmer.data.acquire import acquire
    from robustmer.features.extract import extract

    raw = _params(dataset)
    params = validate_params(raw)
    # Unvalidated, so that each revision fills in its own defaults (an older schema refuses
    # keys it does not know, such as train.workers).
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    acquire(params, root / "raw")
    extract(params, root / "raw", root / "features")
    return root / "params.yaml", root / "features"


def _time(what: str, src: Path, params: Path, store: Path, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "ROBUSTMER_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", WORK, what, str(params), str(store), str(out), LEVEL],
        env=env, capture_output=True, text=True, cwd=params.parent,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-4000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from robustmer.data.store import FeatureStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=["builtin", "emodb"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base],
                       cwd=ROOT, check=True)  # fmt: skip
        try:
            for dataset in args.datasets:
                if dataset == "emodb" and not (SHARED / "emodb").is_dir():
                    print(f"emodb: skipped ({SHARED / 'emodb'} is absent)")
                    continue
                root = Path(tmp) / dataset
                root.mkdir()
                params, store = _prepare(dataset, root)
                versions = {"clean": ROOT / "src", "this": ROOT / "src", "base": base / "src"}
                times: dict[str, list[float]] = {k: [] for k in versions}
                for r in range(args.rounds):
                    for name, src in versions.items():
                        what = "clean" if name == "clean" else "level"
                        out = root / f"{name}_{r}"
                        times[name].append(_time(what, src, params, store, out))
                best = {k: round(min(v), 1) for k, v in times.items()}
                figures[dataset] = {
                    "n_files": len(FeatureStore(store).manifest),  # EmoDB's raw links to it
                    "seconds_min": best,
                    "level_over_clean": round(best["this"] / best["clean"], 2),
                    "base_level_over_clean": round(best["base"] / best["clean"], 2),
                    "this_over_base": round(best["this"] / best["base"], 2),
                }
                f = figures[dataset]
                print(f"{dataset} ({f['n_files']} files): clean extraction {best['clean']} s; "
                      f"one babble level {best['this']} s (this, {f['level_over_clean']}x clean) "
                      f"vs {best['base']} s ({args.base}, {f['base_level_over_clean']}x clean); "
                      f"this / base {f['this_over_base']}")  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    if args.json:
        args.json.write_text(json.dumps({"base": args.base, **figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
