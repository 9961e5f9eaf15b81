"""Unknown adapter and extractor options in params: rejected whenever params are loaded.

The schema cannot list these options (they belong to each dataset's adapter and each extractor
kind), so before this check a typo such as `acquire.folder.n_fold` surfaced only when acquire or
extract ran, and every other stage accepted it. Option names come from plain-data modules
(data/adapter_options.py, features/kinds.py), not from the registries that import adapters and
extractors: loading params imports none of them, and a stage's code deps stay small.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from robustmer.data.adapter_options import option_names, registry_entries
from robustmer.errors import ConfigError
from robustmer.features.kinds import KINDS, MODALITIES


def check_options(params: Mapping[str, Any], source: str = "params") -> None:
    """Raise ConfigError naming the first unknown `acquire.<dataset>` or extractor option."""
    _check_acquire(params.get("acquire") or {}, source)
    _check_extract(params.get("extract") or {}, source)


def _check_acquire(acquire: Mapping[str, Any], source: str) -> None:
    datasets = registry_entries()
    for name, cfg in acquire.items():
        if name not in datasets:
            raise ConfigError(
                f"{source}: acquire.{name}: unknown dataset{_hint([name], datasets)} "
                f"(known: {', '.join(datasets)}); rename or remove the section"
            )
        if datasets[name].get("kind") == "generated" or not isinstance(cfg, Mapping):
            continue  # the schema checks the built-in corpus's keys and the section's type
        adapter, acquisition = option_names(name)
        unknown = sorted(set(cfg) - adapter - acquisition)
        if unknown:
            raise ConfigError(
                f"{source}: acquire.{name}: unknown option(s) {', '.join(unknown)}"
                f"{_hint(unknown, adapter | acquisition)} (adapter options: "
                f"{', '.join(sorted(adapter))}; acquisition keys: {', '.join(sorted(acquisition))}"
                "); fix or remove the key (data/registry.yaml lists the options' defaults)"
            )


def _check_extract(extract: Mapping[str, Any], source: str) -> None:
    for modality in MODALITIES:
        for name, entry in (extract.get(modality) or {}).items():
            kind = entry.get("kind") if isinstance(entry, Mapping) else None
            if kind not in KINDS:
                continue  # the schema rejects it (test kinds are checked by their class)
            known = set(KINDS[kind].options)
            unknown = sorted(set(entry) - known - {"kind"})
            if unknown:
                raise ConfigError(
                    f"{source}: extract.{modality}.{name}: unknown option(s) "
                    f"{', '.join(unknown)}{_hint(unknown, known)} for kind {kind!r} (known: "
                    f"{', '.join(sorted(known))}); fix or remove the key (docs/features.md)"
                )


def _hint(unknown: Iterable[str], known: Iterable[str]) -> str:
    """' (did you mean n_folds?)' for a near miss, else ''."""
    pool = list(known)
    close = [m for key in unknown for m in difflib.get_close_matches(str(key), pool, n=1)]
    return f" (did you mean {', '.join(close)}?)" if close else ""
