"""The dataset registry (registry.yaml): which adapter reads each dataset, and what to expect.

One declarative file so that adding a dataset is one entry plus one adapter function, and so that
licence, citation and the facts the validation stage checks live next to each other.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

from robustmer.errors import ConfigError

Kind = Literal["generated", "raw", "pack"]


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry."""

    name: str
    title: str
    kind: Kind
    access: str
    licence: str
    citation: str
    adapter: str = ""
    files: str = ""
    url: str | None = None
    sha256: str | None = None
    instructions: str = ""
    protocol: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)

    def adapter_fn(self) -> Callable[..., dict[str, Any]]:
        """The adapter's prepare_* (raw) or convert_* (pack) function."""
        return _resolve(self.name, self.adapter)

    def files_fn(self) -> Callable[..., list[Any]]:
        """The pack adapter's files_* function (the files its conversion reads)."""
        return _resolve(self.name, self.files)

    def resolved_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Registry defaults with the user's `acquire.<name>` keys on top (`path` etc. removed)."""
        out = copy.deepcopy(self.options)
        for key, value in (given or {}).items():
            if key not in _ACQUIRE_KEYS:
                out[key] = copy.deepcopy(value)
        return out

    def option_names(self) -> tuple[frozenset[str], frozenset[str]]:
        """(the adapter's options, the acquisition keys) a user may set in `acquire.<name>`."""
        module = self.adapter.partition(":")[0]
        return ADAPTER_OPTIONS.get(module, frozenset()) | frozenset(self.options), _ACQUIRE_KEYS


# Keys of `acquire.<dataset>` that steer acquisition rather than the adapter (the archive limits
# are read by acquire.py's _LIMIT_KEYS; a test keeps the two in step).
_ACQUIRE_KEYS = frozenset(
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
def _load() -> dict[str, DatasetInfo]:
    text = resources.files("robustmer").joinpath("data/registry.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    out = {}
    for name, entry in raw.items():
        entry = dict(entry)
        entry["options"] = entry.get("options") or {}
        entry["expected"] = entry.get("expected") or {}
        out[name] = DatasetInfo(name=name, **entry)
    return out


def registry() -> dict[str, DatasetInfo]:
    """All datasets by name, in registry order."""
    return dict(_load())


def dataset_info(name: str) -> DatasetInfo:
    datasets = _load()
    if name not in datasets:
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(datasets)} "
            "(src/robustmer/data/registry.yaml)"
        )
    return datasets[name]


def _resolve(dataset: str, ref: str) -> Callable[..., Any]:
    if not ref or ":" not in ref:
        raise ConfigError(f"dataset {dataset!r} has no adapter function in the registry")
    module_name, attr = ref.split(":", 1)
    module = importlib.import_module(f"robustmer.data.{module_name}")
    return getattr(module, attr)
