"""The `validate` stage: a Great Expectations gate between `extract` and everything downstream.

The store is summarised into pandas tables (fast, no GX), GX checks those tables and renders Data
Docs, and the gate writes a JSON summary (a DVC metric) whether the data pass or not. On failure
it raises ValidationFailed, which the CLI turns into a non-zero exit, so no later stage runs on
bad data.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustmer.data.store import FeatureStore
from robustmer.errors import ValidationFailed
from robustmer.gate_status import store_digest
from robustmer.io import atomic_dir, write_json
from robustmer.validation.report import collect_failures, failure_message, summary
from robustmer.validation.tables import build_tables

if TYPE_CHECKING:
    from robustmer.validation.suite import TableSuite

log = logging.getLogger(__name__)


def run_gate(
    params: dict[str, Any], store_dir: Path, summary_path: Path, docs_dir: Path
) -> dict[str, Any]:
    """Validate the store at `store_dir`; write the summary and Data Docs; raise if it fails."""
    store_dir, summary_path, docs_dir = Path(store_dir), Path(summary_path), Path(docs_dir)
    store = FeatureStore(store_dir)
    start = time.perf_counter()
    tables = build_tables(store)
    log.info(
        "summarised %d samples x %d features in %.2fs",
        tables.n_samples,
        len(tables.features),
        time.perf_counter() - start,
    )

    start = time.perf_counter()
    # GX is imported only here: it takes seconds, and no other stage needs it.
    from robustmer.validation.dataset_facts import dataset_facts, regression_range
    from robustmer.validation.suite import build_suites

    suites = build_suites(
        tables, params, store.classes, dataset_facts(store), bool(store.info.get("unlabelled")),
        regression_range(store),
    )  # fmt: skip
    outcomes = _run_with_docs(suites, _gx_name(store.dataset), docs_dir)
    failures = collect_failures(outcomes, tables)
    log.info(
        "%d expectations, %d failed, in %.2fs (incl. GX import); Data Docs in %s",
        len(outcomes),
        len(failures),
        time.perf_counter() - start,
        docs_dir,
    )

    result = summary(
        dataset=store.dataset,
        store_dir=store_dir,
        docs_dir=docs_dir,
        tables=tables,
        outcomes=outcomes,
        failures=failures,
    )
    result["store_sha256"] = store_digest(store_dir)  # which store this verdict is about
    write_json(summary_path, result)
    if failures:
        raise ValidationFailed(
            failure_message(failures, len(outcomes), store_dir, summary_path, docs_dir)
        )
    return result


def _run_with_docs(suites: list[TableSuite], name: str, docs_dir: Path) -> list[dict[str, Any]]:
    """Run the suites with Data Docs built in a fresh sibling folder, then swapped in.

    A rerun thus replaces the site instead of piling up pages of earlier runs, and an interrupted
    run leaves the previous site intact.
    """
    from robustmer.validation.runner import run_suites

    with atomic_dir(docs_dir) as tmp:
        return run_suites(suites, name, tmp)


def _gx_name(dataset: str) -> str:
    """GX object names become Data Docs paths (dots become folders): keep them plain."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", dataset) or "dataset"
