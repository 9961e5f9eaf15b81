"""A grid cell that cannot run on its dataset: found and written without torch or pandas.

Its model or condition needs a modality the dataset lacks (the skip record that `train` or
`corrupt` wrote says which). On an audio-only corpus most of the default grid is such cells, so
`robustmer evaluate` checks for one before importing the scoring code: a skipped cell costs the
process start and two small files, not torch's import.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from robustmer.io import write_json, write_text
from robustmer.paths import SCORE_COLUMNS, SUMMARY_FILE

log = logging.getLogger(__name__)


def cell_skip_reason(model_dir: Path, condition_dir: Path) -> str | None:
    """Why the cell of this trained model and condition has no scores, or None if it has."""
    for record in (Path(model_dir) / SUMMARY_FILE, Path(condition_dir) / "condition.json"):
        try:
            reason = json.loads(record.read_text(encoding="utf-8")).get("skipped")
        except (OSError, ValueError):
            continue  # absent or broken: the scoring code reports it with the fix
        if reason:
            return str(reason)
    return None


def write_skipped_cell(
    model_name: str, condition: str, reason: str, out: dict[str, Path]
) -> dict[str, Any]:
    """The outputs of a skipped cell: header-only tables, a figure saying why, and the reason
    in the metrics JSON, where the report looks for it."""
    from robustmer.evaluation.plots import plot_note

    log.warning("skipped evaluate %s %s: %s", model_name, condition, reason)
    metrics = {"model": model_name, "condition": condition, "skipped": reason, "levels": {}}
    write_text(Path(out["scores"]), ",".join(SCORE_COLUMNS) + "\n")
    write_text(Path(out["predictions"]), "level,seed,sample_id\n")
    write_text(Path(out["confusion_csv"]), "actual\n")
    plot_note(Path(out["confusion_png"]), f"{model_name} / {condition}: skipped. {reason}")
    write_json(Path(out["metrics"]), metrics)
    return metrics
