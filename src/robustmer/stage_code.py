"""The source files each pipeline stage runs: a code change reruns exactly the stages it touches.

One table for both workflow fronts. Snakemake lists the files as each rule's inputs
(`code()` in workflow/rules/common.smk). DVC depends on one listing per stage kind,
`data/code/<stage>.txt` (sha256 and path of every file), written by the `code` stage: twenty
source deps in each of ~130 stages made dvc.lock 20,000 lines, which DVC re-parses (round-trip
YAML, pure Python) after every stage it runs. A listing is rewritten only when its files
changed, so DVC reruns only the stages whose code moved. tests/test_workflow_parity.py checks
that each stage's entry covers every module its command imports.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from robustmer.errors import ConfigError

PACKAGE = Path("src/robustmer")
LISTINGS = Path("data/code")

# What every stage imports: params and the option tables they are checked against, errors,
# files, metrics, paths, seeds, signals, workers.
GROUND = (
    "__init__.py",
    "config.py",
    "config_options.py",
    "data/__init__.py",
    "data/adapter_options.py",
    "data/registry.yaml",
    "features/__init__.py",
    "features/kinds.py",
    "errors.py",
    "gate_status.py",
    "io.py",
    "signals.py",
    "workers.py",
    "metrics.py",
    "paths.py",
    "progress.py",
    "seeding.py",
)

_MODEL_DATA = ("data/__init__.py", "data/model_data.py", "data/protocol.py", "data/store.py")
_TRAINING = ("device.py", *_MODEL_DATA, "corruption", "models", "training", "tracking")
_SCORING = ("device.py", "data", "features", "corruption", "models", "training", "tracking",
            "evaluation")  # fmt: skip

# Stage kind -> files and folders under src/robustmer it runs, besides GROUND.
STAGES: dict[str, tuple[str, ...]] = {
    "acquire": (
        "data/__init__.py",
        "data/acquire.py",
        "data/registry.py",
        "data/registry.yaml",
        "data/download.py",
        "data/archive.py",
        "data/protocol.py",
        "data/safe_pickle.py",
        "data/store.py",
        "data/adapters",
        "data/builtin",
    ),
    "extract": ("device.py", "data", "features"),
    "validate": ("device.py", "data", "features", "validation"),
    "corrupt": ("device.py", "data", "features", "corruption"),
    "tune": (*_TRAINING, "tuning"),
    "pretrain": _TRAINING,
    "train": _TRAINING,
    "evaluate": _SCORING,
    "cross_corpus": _SCORING,
    "report": (
        "data/__init__.py",
        "data/store.py",
        "corruption/__init__.py",
        "corruption/conditions.py",
        "corruption/masks.py",
        "evaluation/__init__.py",
        "evaluation/plots.py",
        "evaluation/report.py",
        "evaluation/robustness.py",
        "tracking",
    ),
}


def parts(stage: str) -> tuple[str, ...]:
    """GROUND and the stage's own entries, as paths under src/robustmer."""
    if stage not in STAGES:
        raise KeyError(f"no stage {stage!r} in robustmer.stage_code.STAGES ({', '.join(STAGES)})")
    return tuple(dict.fromkeys((*GROUND, *STAGES[stage])))


def files(stage: str, root: Path = Path()) -> list[Path]:
    """The stage's source files, relative to `root`, in a stable order (caches skipped)."""
    found: list[Path] = []
    for part in parts(stage):
        path = root / PACKAGE / part
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts)  # fmt: skip
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(
                f"{path}: the {stage} stage's code (robustmer.stage_code) is not there; run "
                f"`robustmer code-listings` from the project root (the folder with dvc.yaml and "
                f"{PACKAGE}), or update STAGES if the module moved"
            )
    return [p.relative_to(root) for p in dict.fromkeys(found)]


def listing(stage: str, root: Path = Path()) -> str:
    """`sha256  path` per source file of the stage: what its DVC dependency hashes."""
    lines = []
    for rel in files(stage, root):
        digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        lines.append(f"{digest}  {rel.as_posix()}\n")
    return "".join(lines)


def write_listings(root: Path = Path()) -> list[str]:
    """Write `data/code/<stage>.txt` for every stage kind; only changed ones are replaced (by a
    rename, so a reader never sees half a file). Returns the stages whose listing changed."""
    from robustmer.io import write_text

    out = root / LISTINGS
    out.mkdir(parents=True, exist_ok=True)
    changed = []
    for stage in STAGES:
        target = out / f"{stage}.txt"
        text = listing(stage, root)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            write_text(target, text)
            changed.append(stage)
    return changed
