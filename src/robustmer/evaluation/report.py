"""`robustmer report`: one table and one figure over every model's metrics JSON.

Writes `summary.md` (pooled score with fold mean ± std per metric), `metrics.csv` (the same
numbers, machine-readable) and `accuracy.png` (fold means with std error bars).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.config import Params
from robustmer.errors import DataError
from robustmer.evaluation.metrics import METRIC_KEYS
from robustmer.evaluation.plots import plot_metric_bars
from robustmer.io import atomic_path, read_json, write_text

LABELS = {"wa": "WA", "ua": "UA", "weighted_f1": "WF1", "macro_f1": "MF1"}


def load_metrics(metrics_paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Read every metrics file; a missing or broken one is a DataError naming it."""
    missing = [str(p) for p in metrics_paths if not Path(p).is_file()]
    if missing:
        models = " ".join(Path(p).stem for p in missing)
        raise DataError(
            f"metrics missing: {', '.join(missing)}; run `robustmer evaluate <model>` for "
            f"{models} (or `dvc repro`)"
        )
    out = []
    for path in metrics_paths:
        try:
            metrics = read_json(path)
            for key in METRIC_KEYS:
                float(metrics[key])
                float(metrics["fold_mean"][key])
                float(metrics["fold_std"][key])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}: not a robustmer metrics file ({exc!r}); rerun `robustmer evaluate "
                f"{Path(path).stem}`"
            ) from exc
        metrics.setdefault("model", Path(path).stem)
        out.append(metrics)
    return out


def metrics_table(all_metrics: Sequence[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for m in all_metrics:
        row: dict[str, Any] = {"model": m["model"]}
        for key in METRIC_KEYS:
            row[key] = m[key]
            row[f"{key}_fold_mean"] = m["fold_mean"][key]
            row[f"{key}_fold_std"] = m["fold_std"][key]
        row["n_samples"] = m.get("n_samples")
        row["n_folds"] = m.get("n_folds", len(m.get("per_fold", {})))
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_summary(table: pd.DataFrame, dataset: str) -> str:
    header = "| model | " + " | ".join(LABELS.values()) + " |"
    lines = [
        f"# Results on `{dataset}`",
        "",
        "Scores in %: pooled over all test predictions (each sample predicted once by the model "
        "of its speaker-independent fold), then (mean ± std over folds).",
        "",
        header,
        "|" + "---|" * (len(LABELS) + 1),
    ]
    for row in table.itertuples(index=False):
        cells = [
            f"{100 * getattr(row, k):.1f} ({100 * getattr(row, f'{k}_fold_mean'):.1f} ± "
            f"{100 * getattr(row, f'{k}_fold_std'):.1f})"
            for k in LABELS
        ]
        lines.append(f"| {row.model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "WA = accuracy; UA = mean per-class recall; WF1 = support-weighted F1; "
        "MF1 = unweighted mean F1 (definitions: `robustmer.evaluation.metrics`).",
        "",
    ]
    return "\n".join(lines)


def write_report(params: Params, metrics_paths: list[Path], out_dir: Path) -> Path:
    """Write summary.md, metrics.csv and accuracy.png into `out_dir`; return `out_dir`."""
    out_dir = Path(out_dir)
    table = metrics_table(load_metrics(metrics_paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.csv", suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    write_text(out_dir / "summary.md", markdown_summary(table, str(params.get("dataset", ""))))
    plot_metric_bars(
        list(table["model"]),
        {LABELS[k]: list(table[f"{k}_fold_mean"]) for k in METRIC_KEYS},
        {LABELS[k]: list(table[f"{k}_fold_std"]) for k in METRIC_KEYS},
        out_dir / "accuracy.png",
        title=f"{params.get('dataset', '')}: speaker-independent CV",
    )
    return out_dir
