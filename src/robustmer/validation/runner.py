"""Run the suites through GX checkpoints in an ephemeral context that writes Data Docs to a folder.

Why ephemeral: every GX object (data source, suites, validation definitions, checkpoints) is
rebuilt from code on each run, so nothing GX-specific lives in the repository (no `gx/` folder)
and a rerun is idempotent by construction. The only files GX writes are the Data Docs, into the
folder the caller names. The context is configured without GX's default temporary docs site and
without progress bars (they would clutter the pipeline log).

GX 1.x API used (checked against 1.24): `DataContextConfig(store_backend_defaults=
InMemoryStoreBackendDefaults(init_temp_docs_sites=False), data_docs_sites=...)`, `get_context(mode=
"ephemeral", project_config=...)`, `data_sources.add_or_update_pandas` -> `add_dataframe_asset` ->
`add_batch_definition_whole_dataframe`, `suites` / `validation_definitions` / `checkpoints`
`.add_or_update`, `Checkpoint(result_format=...)`, `checkpoint.run(batch_parameters={"dataframe":
df})`, `context.build_data_docs(site_names=...)`. A checkpoint passes the same batch parameters to
all of its validation definitions, so each table gets its own checkpoint; the site is built once
after all of them (instead of an `UpdateDataDocsAction` on each, which rebuilds it every time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustmer.validation._gx import gx
from robustmer.validation.suite import TableSuite

SITE_NAME = "robustmer"
PARTIAL_COUNT = 20  # unexpected rows reported per expectation (the summary's `samples`)
# GX 1.24 looks up `unexpected_index_column_names` row by row (~0.1 ms per unexpected row, and
# for all of them, not just the partial list): a check failing on every row of a 100k-sample
# table would take ~10 s. Bigger tables get row positions instead (vectorised); the report maps
# them back to sample ids, so only the Data Docs show positions for them.
NAMED_INDEX_MAX_ROWS = 25_000


def run_suites(suites: list[TableSuite], dataset: str, site_dir: Path) -> list[dict[str, Any]]:
    """Validate every table; return one plain dict per expectation result (GX's JSON form).

    Each dict is `ExpectationValidationResult.to_json_dict()` plus `table`, `index_column` and
    `index_columns` (those the report names failing rows by).
    """
    context = _context(site_dir)
    source = context.data_sources.add_or_update_pandas(f"{dataset}_store")
    outcomes: list[dict[str, Any]] = []
    for table_suite in suites:
        name = f"{dataset}.{table_suite.table}"
        asset = source.add_dataframe_asset(table_suite.table)
        batch = asset.add_batch_definition_whole_dataframe("whole_table")
        suite = context.suites.add_or_update(
            gx.ExpectationSuite(name=name, expectations=table_suite.expectations)
        )
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                result_format=result_format(table_suite),
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": table_suite.frame})
        for validation in run.run_results.values():
            for result in validation.results:
                outcome = result.to_json_dict()
                outcome["table"] = table_suite.table
                outcome["index_column"] = table_suite.index_column
                outcome["index_columns"] = [table_suite.index_column, *table_suite.context_columns]
                outcomes.append(outcome)
    # One build for all tables: an UpdateDataDocsAction per checkpoint would rebuild the site
    # (index and static assets) once per table, which is most of the stage's GX time.
    context.build_data_docs(site_names=[SITE_NAME])
    return outcomes


def result_format(table_suite: TableSuite) -> dict[str, Any]:
    """SUMMARY results naming failing rows by the table's index column(s) when affordable."""
    fmt: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_COUNT}
    if len(table_suite.frame) <= NAMED_INDEX_MAX_ROWS:
        fmt["unexpected_index_column_names"] = [
            table_suite.index_column,
            *table_suite.context_columns,
        ]
    return fmt


def _context(site_dir: Path) -> Any:
    """An in-memory context whose only Data Docs site is a local folder at `site_dir`."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(site_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={SITE_NAME: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)
