"""What a user may set in `acquire.<dataset>`, and the registry file itself, as plain data.

Kept apart from data/registry.py, which resolves and imports adapters, so that loading params
can check `acquire.<dataset>` keys for every stage while depending on this file (and
registry.yaml) only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

# Keys of `acquire.<dataset>` that steer acquisition rather than the adapter (the archive limits
# are read by acquire.py's _LIMIT_KEYS; a test keeps the two in step).
ACQUIRE_KEYS = frozenset(
    {"path", "download", "sha256", "url", "allow_unverified"}
    | {"max_archive_members", "max_unpacked_bytes"}
)

# The options each adapter module accepts (besides `dataset`, which acquire sets). Declared here,
# not read from the adapter, so that loading params can reject a typo in `acquire.<dataset>`
# for every stage without importing adapter code; tests/test_config_options.py keeps it equal to
# the adapters' own defaults.
ADAPTER_OPTIONS: dict[str, frozenset[str]] = {
    "adapters.folder": frozenset(["labels", "classes", "n_folds"]),
    "adapters.emodb": frozenset(["n_folds", "text", "skip_invalid"]),
    "adapters.ravdess": frozenset(
        [
            "channels",
            "merge_calm",
            "n_folds",
            "text",
            "skip_invalid",
            "modalities",
            "drop_incomplete",
        ]
    ),
    "adapters.meld": frozenset(["clips", "drop_missing_clips", "max_per_split"]),
    "adapters.feature_tables": frozenset(["n_folds", "inner_join", "audio_table", "video_table"]),
    "adapters.mmin": frozenset(
        [
            "classes",
            "dims",
            "features",
            "normalisation",
            "n_folds",
            "expected_folds",
            "speaker_pattern",
        ]
    ),
    "adapters.mmsa": frozenset(["file", "dims", "features"]),
    "adapters.mertools": frozenset(
        [
            "classes",
            "features",
            "keep_unlabelled",
            "labels",
            "n_folds",
            "seed",
            "test",
            "text_column",
            "transcripts",
        ]
    ),
}


@cache
def registry_entries() -> dict[str, dict[str, Any]]:
    """registry.yaml as read: dataset name -> its entry (data/registry.py builds DatasetInfo)."""
    text = resources.files("robustmer").joinpath("data/registry.yaml").read_text(encoding="utf-8")
    return dict(yaml.safe_load(text))


def option_names(dataset: str) -> tuple[frozenset[str], frozenset[str]]:
    """(its adapter's options, the acquisition keys): what `acquire.<dataset>` may hold."""
    entry = registry_entries()[dataset]
    module = str(entry.get("adapter") or "").partition(":")[0]
    adapter = ADAPTER_OPTIONS.get(module, frozenset()) | frozenset(entry.get("options") or {})
    return adapter, ACQUIRE_KEYS
