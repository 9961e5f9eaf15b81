"""Extractor kinds: which class implements each `kind` of params.yaml `extract.<modality>.<name>`.

Classes are named by dotted path and imported only when an entry uses them, so the stage (and
the schema check) works without the heavy libraries of kinds nobody configured. The kinds
themselves (target, options and defaults) are plain data in features/kinds.py.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from robustmer.errors import ConfigError
from robustmer.features.kinds import KINDS, MODALITIES, Kind

if TYPE_CHECKING:
    from robustmer.features.base import Extractor

_OVERRIDES: dict[str, tuple[Kind, type[Extractor]]] = {}


@contextlib.contextmanager
def registered(kind: str, cls: type[Extractor], *, torch: bool = False) -> Iterator[None]:
    """Test hook: make `kind` build `cls` inside the block (fork-started workers inherit it)."""
    previous = _OVERRIDES.get(kind)
    target = f"{cls.__module__}:{cls.__qualname__}"
    _OVERRIDES[kind] = (Kind(cls.modality, target, torch, dict(cls.defaults)), cls)
    try:
        yield
    finally:
        if previous is None:
            _OVERRIDES.pop(kind, None)
        else:
            _OVERRIDES[kind] = previous


def kind_info(kind: str) -> Kind:
    if kind in _OVERRIDES:
        return _OVERRIDES[kind][0]
    if kind not in KINDS:
        raise ConfigError(f"unknown extractor kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind]


def extractor_class(kind: str) -> type[Extractor]:
    if kind in _OVERRIDES:
        return _OVERRIDES[kind][1]
    module_name, _, attr = kind_info(kind).target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"extractor kind {kind!r} needs {kind_info(kind).target}, which cannot be imported "
            f"({exc}); install the missing dependency or choose another kind"
        ) from exc
    return cls  # type: ignore[no-any-return]


def build_extractors(cfg: dict[str, Any], modality: str, device: str = "cpu") -> list[Extractor]:
    """The configured (not yet set up) extractors of one modality, in params order.

    `cfg` is the whole `extract` section. Option names are checked by each class (ConfigError
    naming `extract.<modality>.<name>`); here: the kind exists and belongs to the modality, and
    no two entries write the same feature name.
    """
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r} (known: {', '.join(MODALITIES)})")
    out: list[Extractor] = []
    for name, entry in (cfg.get(modality) or {}).items():
        where = f"extract.{modality}.{name}"
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ConfigError(f"{where}: expected a mapping with a `kind`")
        try:
            info = kind_info(str(entry["kind"]))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if info.modality != modality:
            raise ConfigError(
                f"{where}: kind {entry['kind']!r} extracts {info.modality}, not {modality}; "
                f"move the entry under extract.{info.modality}"
            )
        out.append(extractor_class(str(entry["kind"]))(str(name), dict(entry), device))
    return out


def check_feature_names(modality: str, names: dict[str, list[str]]) -> None:
    """`names`: entry -> the feature names it writes; a name written twice is a ConfigError."""
    seen: dict[str, str] = {}
    for entry, features in names.items():
        for feature in features:
            if feature in seen and seen[feature] != entry:
                raise ConfigError(
                    f"extract.{modality}.{entry} and extract.{modality}.{seen[feature]} both "
                    f"write {modality}/{feature}; rename one of the entries"
                )
            seen[feature] = entry


def uses_torch(ext: Extractor) -> bool:
    return kind_info(ext.kind).torch
