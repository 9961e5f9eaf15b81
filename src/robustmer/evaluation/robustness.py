"""Robustness as one number per model and condition (MultiBench), and per-modality reliance.

- Relative robustness: the area under the metric-vs-level curve by the trapezoid rule with unit
  spacing 0.1, `sum_i (f_i + f_{i+1}) * 0.1 / 2`, over the levels in the order params lists them
  (mildest first), f_0 being the clean score (prepended unless the first level is a rate of 0).
  The x-axis is the level index for every condition family, never the level value (missing
  rates, dB and blur sigmas are not comparable), so numbers stay comparable across runs as long
  as the levels are the same. Higher is better; error metrics are negated.
- Effective robustness: the curve's gain over a reference model's curve shifted to the same
  first score, `sum_i (f_i - (r_i + f_0 - r_0))`: 0 for a model that is better only because it
  starts higher. MultiBench's reference is late fusion; ours is `report.robustness_reference`
  (default: the early-fusion MLP).
- Both also min-max normalised over the models compared (best 1, worst 0), as MultiBench reports
  them; the raw values come first because the normalised ones depend on the comparison set.
- Reliance on a modality: the clean score minus the score when only that modality is missing
  (the missing-pattern condition), in metric units.

Facts: ../shared/spec/robustness-metrics.md; definitions for users: docs/robustness.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from robustmer.metrics import higher_is_better

SPACING = 0.1  # MultiBench's unit spacing between levels
# Missing-pattern levels with exactly one modality missing (a = audio, v = video, l = language).
ONLY_MISSING = {"audio": "zvl", "video": "azl", "text": "avz"}
UNORDERED_KINDS = frozenset({"clean", "missing_pattern"})  # no curve to integrate


def relative_robustness(curve: Sequence[float], spacing: float = SPACING) -> float:
    """Trapezoid area under `curve` (mildest level first) with equal `spacing`."""
    f = np.asarray(curve, dtype=float)
    return float(np.sum((f[:-1] + f[1:]) * spacing / 2))


def effective_robustness(curve: Sequence[float], reference: Sequence[float]) -> float:
    """Sum over levels of the curve minus the reference curve shifted to the same first score."""
    f, r = np.asarray(curve, dtype=float), np.asarray(reference, dtype=float)
    if f.shape != r.shape:
        raise ValueError(f"curve has {f.size} levels, the reference {r.size}")
    return float(np.sum(f - (r + f[0] - r[0])))


def minmax(values: pd.Series) -> pd.Series:
    """Best 1, worst 0 over the given values (all 1 when they are equal; NaN stays NaN)."""
    low, high = values.min(), values.max()
    if not np.isfinite(high - low) or high == low:
        return values.where(values.isna(), 1.0)
    return (values - low) / (high - low)


def robustness_table(
    summary: pd.DataFrame, kinds: Mapping[str, str], metric: str, reference: str
) -> pd.DataFrame:
    """Per (condition, model): relative and effective robustness of `metric` (fold means).

    `summary` is report.summary_table's frame; `kinds` maps each condition to its kind;
    conditions without an ordered curve (clean, missing patterns) or with one level are left
    out.
    """
    sign = 1.0 if higher_is_better(metric) else -1.0
    part = summary[summary["metric"] == metric]
    clean = _clean_scores(part, kinds)
    rows = []
    for condition, cells in part.groupby("condition", sort=False):
        if kinds.get(condition) in UNORDERED_KINDS or cells["level"].nunique() < 2:
            continue
        # f_0 is the clean score: prepended unless the first level is itself clean (value 0:
        # a missing or drop rate of 0).
        prepend = clean is not None and float(cells["level_value"].iloc[0]) != 0.0
        curves = {}
        for model, frame in cells.groupby("model", sort=False):
            curve = frame["mean"].to_numpy(dtype=float)
            if prepend:
                curve = np.concatenate([[clean.get(model, np.nan)], curve])  # type: ignore[union-attr]
            curves[model] = sign * curve
        ref = curves.get(reference)
        for model, curve in curves.items():
            effective = np.nan
            if ref is not None and ref.shape == curve.shape:
                effective = effective_robustness(curve, ref)
            rows.append({
                "condition": condition, "model": model, "metric": metric,
                "n_levels": len(curve), "relative": relative_robustness(curve),
                "effective": effective, "reference": reference,
            })  # fmt: skip
    table = pd.DataFrame(
        rows, columns=["condition", "model", "metric", "n_levels", "relative", "effective",
                       "reference"],
    )  # fmt: skip
    for key in ("relative", "effective"):
        table[f"{key}_norm"] = table.groupby("condition")[key].transform(minmax)
    return table


def _clean_scores(part: pd.DataFrame, kinds: Mapping[str, str]) -> pd.Series | None:
    """model -> the metric on the first condition of kind clean, if the grid has one."""
    clean = [c for c, k in kinds.items() if k == "clean"]
    if not clean:
        return None
    return part[part["condition"] == clean[0]].groupby("model")["mean"].first()


def reliance_table(summary: pd.DataFrame, kinds: Mapping[str, str], metric: str) -> pd.DataFrame:
    """Per model: clean score minus the score with only one modality missing, per modality."""
    part = summary[summary["metric"] == metric]
    base = _clean_scores(part, kinds)
    patterns = [c for c, k in kinds.items() if k == "missing_pattern"]
    if base is None or not patterns:
        return pd.DataFrame(columns=["model", "metric", *ONLY_MISSING])
    missing = part[part["condition"] == patterns[0]].set_index(["model", "level"])["mean"]
    rows = []
    for model, score in base.items():
        row = {"model": model, "metric": metric}
        for modality, level in ONLY_MISSING.items():
            row[modality] = float(score - missing.get((model, level), np.nan))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "metric", *ONLY_MISSING])
