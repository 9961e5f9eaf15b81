"""Turn GX expectation results into the gate's summary JSON and its error message.

Works on the plain JSON form of the results (`ExpectationValidationResult.to_json_dict()`), so
it needs no GX import and is easy to test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.validation.tables import StoreTables

MAX_SAMPLES = 20  # sample ids per failure in the summary
MAX_NAMED = 10  # rows named per failure in the error message


@dataclass
class Failure:
    """One failed expectation, phrased for a person and for the DVC metric file."""

    check: str
    expectation: str
    table: str
    column: str | None
    feature: str | None
    n_unexpected: int | None
    samples: list[str] = field(default_factory=list)
    index_column: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    fix: str = ""

    def describe(self) -> str:
        """One bullet of the error message: what failed, where, and the fix."""
        what = f"[{self.table}] {self.check}"
        if self.n_unexpected is not None:
            what += f": {self.n_unexpected} {_noun(self.table, self.n_unexpected)}"
        named = [_name_row(row, self.index_column) for row in self.rows[:MAX_NAMED]]
        if named:
            more = ", ..." if (self.n_unexpected or 0) > len(named) else ""
            what += f": {', '.join(named)}{more}"
        if self.table != "samples" and self.samples:
            what += f"; samples {', '.join(self.samples[:MAX_NAMED])}"
        if self.detail:
            what += f"; {self.detail}"
        return f"  - {what}\n    fix: {self.fix}"


def collect_failures(outcomes: list[dict[str, Any]], tables: StoreTables) -> list[Failure]:
    """Failures in suite order (tables as run: samples, features, classes, speakers).

    GX does not return results in suite order; a fixed order keeps the message and the summary
    (a DVC metric, so diffed) stable across runs.
    """
    tables_in_order = list(dict.fromkeys(o.get("table") for o in outcomes))

    def position(o: dict[str, Any]) -> tuple[int, int]:
        meta = (o.get("expectation_config") or {}).get("meta") or {}
        return tables_in_order.index(o.get("table")), int(meta.get("order", 0))

    failed = sorted((o for o in outcomes if not o.get("success")), key=position)
    return [_failure(o, tables) for o in failed]


def summary(
    *,
    dataset: str,
    store_dir: Path,
    docs_dir: Path,
    tables: StoreTables,
    outcomes: list[dict[str, Any]],
    failures: list[Failure],
) -> dict[str, Any]:
    """The JSON written to the summary path; its top-level numbers are the DVC metrics."""
    per_table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        entry = per_table.setdefault(o["table"], {"n_expectations": 0, "n_failed": 0})
        entry["n_expectations"] += 1
        entry["n_failed"] += int(not o.get("success"))
    return {
        "success": not failures,
        "dataset": dataset,
        "store": store_dir.as_posix(),
        "data_docs": (docs_dir / "index.html").as_posix(),
        "n_samples": tables.n_samples,
        "n_features": len(tables.features),
        "n_expectations": len(outcomes),
        "n_failed": len(failures),
        "tables": per_table,
        "failures": [_failure_json(f) for f in failures],
    }


def failure_message(
    failures: list[Failure], n_expectations: int, store_dir: Path, summary_path: Path, docs: Path
) -> str:
    """The ValidationFailed text: every failing check with the rows it names and the fix."""
    lines = [
        f"validation failed: {len(failures)} of {n_expectations} checks on the feature store "
        f"{store_dir.as_posix()}:",
        *(f.describe() for f in failures),
        f"Details: {summary_path.as_posix()} and {(docs / 'index.html').as_posix()}. "
        "Nothing downstream runs until these are fixed.",
    ]
    return "\n".join(lines)


def _failure(outcome: dict[str, Any], tables: StoreTables) -> Failure:
    config = outcome.get("expectation_config") or {}
    meta = config.get("meta") or {}
    kwargs = config.get("kwargs") or {}
    result = outcome.get("result") or {}
    exception = outcome.get("exception_info") or {}
    table = str(outcome.get("table", meta.get("table", "")))
    index_column = str(outcome.get("index_column", ""))
    checked = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    rows = _unexpected_rows(outcome, checked, tables)
    column = " == ".join(checked) or None
    detail = ""
    if exception.get("raised_exception"):
        detail = f"could not be evaluated: {exception.get('exception_message')}"
    elif "observed_value" in result:
        detail = f"observed {result['observed_value']!r}"
    keys = [r.get(index_column) for r in rows]
    if table == "samples":
        samples = [str(k) for k in keys[:MAX_SAMPLES]]
    elif table == "speakers":
        samples = tables.samples_of_speakers(keys, MAX_SAMPLES)
    else:
        samples = []
    if table == "features":
        rows = [_with_feature_error(r, tables) for r in rows]
    unexpected = result.get("unexpected_count")
    return Failure(
        check=str(meta.get("check") or config.get("description") or config.get("type")),
        expectation=str(config.get("type", "")),
        table=table,
        column=column,
        feature=meta.get("feature") or _feature_keys(table, keys),
        n_unexpected=None if unexpected is None else int(unexpected),
        samples=samples,
        index_column=index_column,
        rows=rows[:MAX_SAMPLES],
        detail=detail,
        fix=str(meta.get("fix", "")),
    )


def _feature_keys(table: str, keys: list[Any]) -> str | None:
    """The failing features of a features-table check, e.g. `audio/egemaps, text/minilm`."""
    return (", ".join(map(str, keys)) or None) if table == "features" else None


def _unexpected_rows(
    outcome: dict[str, Any], checked: list[str], tables: StoreTables
) -> list[dict[str, Any]]:
    """Failing rows as {checked column(s)..., index column(s)...} dicts.

    GX gives such dicts when it was asked for `unexpected_index_column_names`, and row positions
    for big tables (see runner.NAMED_INDEX_MAX_ROWS); positions are looked up in the table.
    """
    entries = (outcome.get("result") or {}).get("partial_unexpected_index_list") or []
    index_columns = outcome.get("index_columns") or [outcome.get("index_column")]
    rows: list[dict[str, Any]] = []
    for entry in entries:
        if isinstance(entry, dict):
            rows.append({str(k): _plain(v) for k, v in entry.items()})
            continue
        record = tables.frame(str(outcome.get("table"))).iloc[int(entry)]
        rows.append({c: _plain(record[c]) for c in [*checked, *index_columns] if c in record})
    return rows


def _with_feature_error(row: dict[str, Any], tables: StoreTables) -> dict[str, Any]:
    """Add the read error (if any) of a failing feature, so the message says what broke."""
    frame = tables.features
    match = frame.loc[frame["feature"] == row.get("feature"), "error"]
    error = str(match.iloc[0]) if len(match) else ""
    return {**row, "error": error} if error else row


def _name_row(row: dict[str, Any], index_column: str) -> str:
    """`s003 (label='bored')` from {'sample_id': 's003', 'label': 'bored'}."""
    values = ", ".join(f"{k}={_short(v)}" for k, v in row.items() if k != index_column)
    key = row.get(index_column, "?")
    return f"{key} ({values})" if values else str(key)


def _noun(table: str, n: int) -> str:
    singular = {
        "samples": "sample",
        "features": "feature",
        "speakers": "speaker",
        "classes": "class",
        "dataset": "fact",
    }.get(table, "row")
    if n == 1:
        return singular
    return "classes" if singular == "class" else f"{singular}s"


def _failure_json(failure: Failure) -> dict[str, Any]:
    data = asdict(failure)
    data["rows"] = [{str(k): _plain(v) for k, v in row.items()} for row in failure.rows]
    return data


def _plain(value: Any) -> Any:
    """A plain Python scalar: GX leaves numpy scalars in its index lists; pandas gives NA."""
    if hasattr(value, "item"):
        value = value.item()
    if value is pd.NA:
        return None
    return value


def _short(value: Any) -> str:
    """A value for the message: floats to 6 significant digits, everything else as repr."""
    return f"{value:.6g}" if isinstance(value, float) else repr(value)
