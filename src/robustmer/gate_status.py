"""Whether the validation gate let the current feature store through: checked by every stage
that reads the store, so the CLI stops after a failed gate as DVC and Snakemake do.

Light on purpose (JSON and the store's info file; no Great Expectations): it runs at the start
of `train`, `pretrain`, `corrupt` and `evaluate`. A failed gate counts only for the store it
judged (the summary records the sha256 of its store.json), so re-extracting clears it; a store the
gate never saw is not refused (the workflows always run the gate first). `--force` runs anyway,
and the run is tagged `robustmer.gate_forced` in MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from robustmer.errors import ValidationFailed

STORE_INFO = "store.json"  # data/store.py writes it when a store is finalised

log = logging.getLogger(__name__)

FORCED_ENV = "ROBUSTMER_GATE_FORCED"  # set by --force; read when the run's tags are made
FORCED_TAG = "robustmer.gate_forced"


def store_digest(store_dir: Path) -> str | None:
    """sha256 of the store's `store.json` (manifest and every feature's hash): what was judged."""
    try:
        return hashlib.sha256((Path(store_dir) / STORE_INFO).read_bytes()).hexdigest()
    except OSError:
        return None


def require_passed(summary_path: Path, store_dir: Path, stage: str, force: bool = False) -> None:
    """Raise ValidationFailed when the latest gate result for this store is a failure."""
    summary_path = Path(summary_path)
    try:
        result = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # never validated (or unreadable): the workflows run the gate before this
    judged = result.get("store_sha256")
    if result.get("success", True) or judged != store_digest(store_dir):
        return
    what = ((result.get("failures") or [{}])[0]).get("check") or "see the summary"
    message = (
        f"the validation gate failed on the store {Path(store_dir).as_posix()} "
        f"({result.get('n_failed', '?')} of {result.get('n_expectations', '?')} checks; first: "
        f"{what}; details in {summary_path.as_posix()}). Fix the data and rerun `robustmer "
        f"validate`, or run `robustmer {stage} ... --force` to go on anyway (recorded in MLflow "
        f"as {FORCED_TAG})"
    )
    if not force:
        raise ValidationFailed(message)
    log.warning("--force: %s", message)
    os.environ[FORCED_ENV] = "1"


def gate_tags() -> dict[str, str]:
    """The MLflow tag of a run that was forced past a failed gate."""
    return {FORCED_TAG: "true"} if os.environ.get(FORCED_ENV) == "1" else {}
