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
from typing import Any, Literal

from robustmer.data.adapter_options import ACQUIRE_KEYS, registry_entries
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
            if key not in ACQUIRE_KEYS:
                out[key] = copy.deepcopy(value)
        return out


@cache
def _load() -> dict[str, DatasetInfo]:
    out = {}
    for name, entry in registry_entries().items():
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
