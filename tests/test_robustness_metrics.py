"""Robustness as one number: MultiBench's relative and effective robustness, and reliance."""

from __future__ import annotations

import pandas as pd
import pytest

from robustmer.evaluation.robustness import (
    effective_robustness,
    minmax,
    relative_robustness,
    reliance_table,
    robustness_table,
)


def test_relative_robustness_is_the_trapezoid_area_with_spacing_0_1() -> None:
    # (0.8 + 0.6) * 0.05 + (0.6 + 0.4) * 0.05
    assert relative_robustness([0.8, 0.6, 0.4]) == pytest.approx(0.12)
    assert relative_robustness([0.5, 0.5]) == pytest.approx(0.05)


def test_effective_robustness_shifts_the_reference_to_the_same_start() -> None:
    reference = [0.7, 0.6, 0.3]
    # beta = reference + 0.1 = [0.8, 0.7, 0.4]; sum(f - beta) = 0 - 0.1 + 0
    assert effective_robustness([0.8, 0.6, 0.4], reference) == pytest.approx(-0.1)
    # Better only because it starts higher: exactly 0.
    assert effective_robustness([0.9, 0.8, 0.5], reference) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="levels"):
        effective_robustness([0.9, 0.8], reference)


def test_minmax_puts_the_best_at_1_and_the_worst_at_0() -> None:
    assert minmax(pd.Series([0.2, 0.4, 0.3])).to_list() == pytest.approx([0.0, 1.0, 0.5])
    assert minmax(pd.Series([0.3, 0.3])).to_list() == [1.0, 1.0]


def summary_frame() -> pd.DataFrame:
    rows = []
    cells = {
        ("clean", "clean", 0.0): {"a": 0.80, "b": 0.70},
        ("drop", "0.0", 0.0): {"a": 0.80, "b": 0.70},
        ("drop", "0.5", 0.5): {"a": 0.50, "b": 0.60},
        ("snr", "20", 20.0): {"a": 0.70, "b": 0.65},
        ("snr", "0", 0.0): {"a": 0.40, "b": 0.55},
        ("pattern", "zvl", 0.0): {"a": 0.60, "b": 0.30},
        ("pattern", "azl", 1.0): {"a": 0.75, "b": 0.68},
        ("pattern", "avz", 2.0): {"a": 0.79, "b": 0.50},
    }
    for (condition, level, value), scores in cells.items():
        for model, score in scores.items():
            rows.append({"model": model, "condition": condition, "level": level,
                         "level_value": value, "metric": "ua", "mean": score})  # fmt: skip
    return pd.DataFrame(rows)


KINDS = {"clean": "clean", "drop": "missing_rate", "snr": "audio_snr", "pattern": "missing_pattern"}


def test_robustness_table_on_hand_computed_curves() -> None:
    table = robustness_table(summary_frame(), KINDS, "ua", reference="b")
    cell = table.set_index(["condition", "model"])
    assert set(table["condition"]) == {"drop", "snr"}  # clean and patterns have no curve
    # drop starts at rate 0 (clean): curve a = [0.8, 0.5]
    assert cell.loc[("drop", "a"), "relative"] == pytest.approx((0.8 + 0.5) * 0.05)
    # snr gets the clean score first: a = [0.8, 0.7, 0.4], b = [0.7, 0.65, 0.55]
    assert cell.loc[("snr", "a"), "n_levels"] == 3
    assert cell.loc[("snr", "a"), "relative"] == pytest.approx(relative_robustness([0.8, 0.7, 0.4]))
    # beta = b + 0.1 = [0.8, 0.75, 0.65]; a - beta = [0, -0.05, -0.25]
    assert cell.loc[("snr", "a"), "effective"] == pytest.approx(-0.3)
    assert cell.loc[("snr", "b"), "effective"] == pytest.approx(0.0)
    # areas: a 0.075 + 0.055 = 0.13, b 0.0675 + 0.06 = 0.1275; effective: b 0 > a -0.3
    assert cell.loc[("snr", "a"), "relative_norm"] == 1.0
    assert cell.loc[("snr", "b"), "relative_norm"] == 0.0
    assert cell.loc[("snr", "b"), "effective_norm"] == 1.0


def test_error_metrics_are_negated() -> None:
    frame = summary_frame().assign(metric="mae")
    table = robustness_table(frame, KINDS, "mae", reference="b").set_index(["condition", "model"])
    assert table.loc[("drop", "a"), "relative"] == pytest.approx(-(0.8 + 0.5) * 0.05)


def test_reliance_is_the_drop_when_only_that_modality_is_missing() -> None:
    table = reliance_table(summary_frame(), KINDS, "ua").set_index("model")
    assert table.loc["a", "audio"] == pytest.approx(0.80 - 0.60)  # zvl: audio missing
    assert table.loc["a", "video"] == pytest.approx(0.80 - 0.75)  # azl
    assert table.loc["b", "text"] == pytest.approx(0.70 - 0.50)  # avz
    assert reliance_table(summary_frame(), {"clean": "clean"}, "ua").empty
