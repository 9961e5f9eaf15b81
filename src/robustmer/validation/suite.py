"""The expectations of the gate: one GX suite per table of `tables.StoreTables`.

Every expectation carries, in its `meta`, the name of the check it implements and the fix to
print when it fails, so the gate phrases failures from the validation results alone; the same
text appears as the expectation's description and notes in the Data Docs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from robustmer.validation._gx import gxe
from robustmer.validation.tables import (
    LEVELS,
    NOT_NULL_COLUMNS,
    REGRESSION_COLUMN,
    REGRESSION_FINITE,
    StoreTables,
    protocol_column,
    stat_column,
)

REEXTRACT = "re-run `robustmer extract` (or `dvc repro extract`) to rebuild the store"


@dataclass
class TableSuite:
    """One table, the column that names its rows in failures, and its expectations.

    `context_columns` are reported with every failing row besides the checked column (e.g. the
    folds a leaking speaker is in).
    """

    table: str
    frame: pd.DataFrame
    index_column: str
    context_columns: tuple[str, ...] = ()
    expectations: list[Any] = field(default_factory=list)

    def add(
        self, expectation_cls: type, check: str, fix: str, feature: str = "", **kw: Any
    ) -> None:
        """Append an expectation labelled with the check it implements and how to fix it."""
        # `order` lets the report list failures in suite order (GX returns results unordered).
        meta = {"check": check, "fix": fix, "table": self.table, "order": len(self.expectations)}
        if feature:
            meta["feature"] = feature
        self.expectations.append(expectation_cls(description=check, notes=fix, meta=meta, **kw))


def build_suites(
    tables: StoreTables,
    params: dict[str, Any],
    classes: list[str],
    facts: pd.DataFrame | None = None,
    unlabelled: bool = False,
    regression_range: tuple[float, float] | None = None,
) -> list[TableSuite]:
    """All suites for a store; the speakers suite only when the manifest has folds, the
    dataset suite when the registry expects facts of this dataset.

    `unlabelled`: the store declares a semi-supervised pool, whose samples carry label "".
    `regression_range`: the dataset's range of `regression` targets, where one is known.
    """
    cfg = params["validate"]
    samples = _samples_suite(tables, classes, float(cfg["max_abs_value"]), unlabelled)
    if REGRESSION_COLUMN in tables.samples.columns:
        _add_regression_checks(samples, regression_range)
    suites = [
        samples,
        _features_suite(tables, cfg.get("max_placeholder_fraction")),
        _classes_suite(tables, int(cfg["min_samples_per_class"])),
    ]
    if tables.speakers is not None:
        suites.append(_speakers_suite(tables.speakers))
    if facts is not None and len(facts):
        suites.append(_dataset_suite(facts))
    return suites


def _dataset_suite(facts: pd.DataFrame) -> TableSuite:
    s = TableSuite("dataset", facts, "fact", context_columns=("expected", "actual"))
    s.add(
        gxe.ExpectColumnPairValuesToBeEqual,
        "the dataset matches the registry's facts (counts, classes, folds, dims, protocol)",
        "the copy is incomplete, a different release, or converted with other options: compare "
        "it with the dataset's instructions (`robustmer datasets NAME`), then re-run "
        "`robustmer acquire` and `robustmer extract`",
        column_A="expected",
        column_B="actual",
    )
    return s


def _samples_suite(
    tables: StoreTables, classes: list[str], max_abs: float, unlabelled: bool = False
) -> TableSuite:
    s = TableSuite("samples", tables.samples, "sample_id")
    s.add(
        gxe.ExpectColumnValuesToBeUnique,
        "sample ids are unique",
        "remove the duplicate rows from the source metadata, then " + REEXTRACT,
        column="sample_id",
    )
    protocol = protocol_column(tables.manifest_columns)
    for column in (*NOT_NULL_COLUMNS, protocol):
        s.add(
            gxe.ExpectColumnValuesToNotBeNull,
            f"manifest column `{column}` is present and not null",
            f"fill in `{column}` for every utterance in the source metadata, then " + REEXTRACT,
            column=column,
        )
    s.add(
        gxe.ExpectColumnValuesToBeInSet,
        "labels are declared classes",
        f"fix the label in the source metadata (declared classes: {', '.join(classes)}) or "
        "declare the class in the corpus classes, then " + REEXTRACT,
        column="label",
        value_set=[*classes, ""] if unlabelled else list(classes),
    )
    for feature, level in tables.feature_levels.items():
        s.add(
            gxe.ExpectColumnValuesToBeBetween,
            f"{feature}: no NaN/inf values",
            "the extractor produced NaN/inf for these samples; check their media files, then "
            + REEXTRACT,
            feature=feature,
            column=stat_column(feature, "n_nonfinite"),
            min_value=0,
            max_value=0,
        )
        s.add(
            gxe.ExpectColumnValuesToBeBetween,
            f"{feature}: |values| <= validate.max_abs_value ({max_abs:g})",
            "check the extractor's scaling for these samples and "
            + REEXTRACT
            + ", or raise validate.max_abs_value in params.yaml if such values are legitimate",
            feature=feature,
            column=stat_column(feature, "max_abs"),
            max_value=max_abs,
        )
        if level == "utterance":
            s.add(
                gxe.ExpectColumnValuesToBeBetween,
                f"{feature}: utterance-level feature has exactly one frame per sample",
                "the feature file does not match its declared level; " + REEXTRACT,
                feature=feature,
                column=stat_column(feature, "n_frames"),
                min_value=1,
                max_value=1,
            )
    return s


def _add_regression_checks(s: TableSuite, value_range: tuple[float, float] | None) -> None:
    """The float targets `task: regression` models learn: finite where labelled, in range."""
    fix = (
        "the source's regression labels are missing, damaged or on another scale: check the "
        "copy against the dataset's instructions (`robustmer datasets NAME`), then re-run "
        "`robustmer acquire` and " + REEXTRACT
    )
    s.add(
        gxe.ExpectColumnValuesToBeInSet,
        f"`{REGRESSION_COLUMN}` targets are finite for every labelled sample",
        fix,
        column=REGRESSION_FINITE,
        value_set=[True],
    )
    if value_range is not None:
        low, high = value_range
        s.add(
            gxe.ExpectColumnValuesToBeBetween,
            f"`{REGRESSION_COLUMN}` targets lie in [{low:g}, {high:g}]",
            fix,
            column=REGRESSION_COLUMN,
            min_value=low,
            max_value=high,
        )


def _features_suite(tables: StoreTables, max_placeholders: float | None = None) -> TableSuite:
    """Structure of every feature, and its placeholder rows (`max_placeholders`: the largest
    allowed share, from validated params; None skips that one check)."""
    s = TableSuite("features", tables.features, "feature")
    broken = "the feature files are inconsistent (partly written or edited by hand); " + REEXTRACT
    s.add(
        gxe.ExpectTableRowCountToBeBetween,
        "the store holds at least one feature",
        "no features were extracted; check params.yaml `extract`, then " + REEXTRACT,
        min_value=1,
    )
    s.add(
        gxe.ExpectColumnValuesToBeInSet,
        "feature files are readable",
        broken,
        column="readable",
        value_set=[True],
    )
    s.add(
        gxe.ExpectColumnValuesToBeInSet,
        "declared level is utterance or frame",
        broken,
        column="level",
        value_set=list(LEVELS),
    )
    pairs = [
        ("declared dim (meta.dim) equals values.shape[1]", "declared_dim", "actual_dim"),
        ("offsets have one entry per sample plus one", "n_offsets", "expected_n_offsets"),
        ("offsets end at the number of value rows", "last_offset", "n_value_rows"),
        ("meta n_samples matches the manifest", "meta_n_samples", "manifest_n_samples"),
        ("store.json n_samples matches the manifest", "store_n_samples", "manifest_n_samples"),
    ]
    for check, column_a, column_b in pairs:
        s.add(
            gxe.ExpectColumnPairValuesToBeEqual,
            check,
            broken,
            column_A=column_a,
            column_B=column_b,
            ignore_row_if="either_value_is_missing",  # an unreadable file fails `readable`
        )
    s.add(
        gxe.ExpectColumnValuesToBeBetween,
        "offsets start at 0",
        broken,
        column="first_offset",
        min_value=0,
        max_value=0,
    )
    s.add(
        gxe.ExpectColumnValuesToBeBetween,
        "offsets are non-decreasing",
        broken,
        column="min_offset_step",
        min_value=0,
    )
    _add_placeholder_checks(s, broken, max_placeholders)
    return s


def _add_placeholder_checks(s: TableSuite, broken: str, max_fraction: float | None) -> None:
    """Zero placeholders for bad media (extract.on_error: placeholder) are allowed only when
    recorded, zero, and few enough."""
    s.add(
        gxe.ExpectColumnPairValuesToBeEqual,
        "placeholder rows in placeholders.parquet match the feature's metadata count",
        broken,
        column_A="n_placeholders",
        column_B="meta_placeholders",
        ignore_row_if="either_value_is_missing",
    )
    s.add(
        gxe.ExpectColumnValuesToBeInSet,
        "every recorded placeholder row is a single zero frame",
        broken,
        column="placeholders_zero",
        value_set=[True],
    )
    if max_fraction is not None:
        s.add(
            gxe.ExpectColumnValuesToBeBetween,
            f"placeholder rows are at most validate.max_placeholder_fraction ({max_fraction:g}) "
            "of the samples",
            "too many media files could not be extracted (their reasons are in the store's "
            "placeholders.parquet and the extract log): replace or remove them and "
            + REEXTRACT
            + ", or raise validate.max_placeholder_fraction in params.yaml",
            column="placeholder_fraction",
            max_value=float(max_fraction),
        )


def _classes_suite(tables: StoreTables, min_per_class: int) -> TableSuite:
    s = TableSuite("classes", tables.classes, "label")
    s.add(
        gxe.ExpectColumnValuesToBeBetween,
        f"every declared class has at least validate.min_samples_per_class ({min_per_class}) "
        "samples",
        "add samples of this class, drop the class from the corpus classes, or lower "
        "validate.min_samples_per_class in params.yaml",
        column="n_samples",
        min_value=min_per_class,
    )
    return s


def _speakers_suite(speakers: pd.DataFrame) -> TableSuite:
    s = TableSuite("speakers", speakers, "speaker", context_columns=("folds",))
    s.add(
        gxe.ExpectColumnValuesToBeBetween,
        "no speaker is in more than one fold (speaker-independent CV)",
        "assign each speaker to exactly one fold in the source metadata, then " + REEXTRACT,
        column="n_folds",
        max_value=1,
    )
    return s
