"""Method names in params.yaml (`models.<m>.arch`) -> the registered `Method` (models/method.py).

Nothing is listed here: a method package registers itself when imported, and `method(name)`
imports `robustmer.models.<name>` (or a plug-in package `<name>`) on first use, so adding a
method touches no shared file. Importing a method package is light (no torch); its networks are
imported when built.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import TYPE_CHECKING

from robustmer.config import ModelSpec, Params
from robustmer.errors import ConfigError
from robustmer.models.method import Method, n_outputs

if TYPE_CHECKING:
    from torch import nn

_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make `method` available as `arch: <method.name>`; called in the method's package."""
    existing = _METHODS.get(method.name)
    if existing is not None and existing is not method:
        raise ValueError(f"method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def method(name: str) -> Method:
    """The registered method `name`, importing its package on first use.

    Built-in methods live in `robustmer.models.<name>`; any other importable package named
    `<name>` may register one (a plug-in method outside this package).
    """
    if name not in _METHODS:
        _import_method(name)
    if name not in _METHODS:
        raise ConfigError(
            f"unknown model architecture {name!r} (known: {', '.join(method_names())}); a new "
            "method is one package that registers it (docs/methods.md)"
        )
    return _METHODS[name]


def method_names() -> list[str]:
    """Built-in method packages and every method registered so far."""
    from robustmer import models

    builtin = {m.name for m in pkgutil.iter_modules(models.__path__) if m.ispkg}
    return sorted(builtin | set(_METHODS))


def _import_method(name: str) -> None:
    if not name.isidentifier():
        return
    for module in (f"robustmer.models.{name}", name):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module.startswith(exc.name):
                continue  # no such package; a missing dependency inside one is re-raised
            raise
        if name in _METHODS:
            return


def build_model(
    spec: ModelSpec,
    input_dims: Mapping[str, int],
    n_classes: int,
    levels: Mapping[str, str] | None = None,
    parts: Mapping[str, tuple[int, ...]] | None = None,
) -> nn.Module:
    """The network of `spec.arch` for these per-modality input dims (what checkpoints hold).

    `n_classes` is the store's class count; the builder gets `n_outputs` (1 for regression).
    `parts` gives, per modality, the dims of its listed features (`ModelData.part_dims`); a
    method with `feature_parts` receives them (default: one part per modality).
    """
    missing = set(spec.features) - set(input_dims)
    if missing:
        raise ConfigError(f"model {spec.name!r}: no input dims for {sorted(missing)}")
    known = method(spec.arch)
    known.validate(spec)  # an entry built without going through the params checks
    extra: dict[str, object] = {}
    if known.feature_parts:
        given = dict(parts or {})
        extra["parts"] = {m: tuple(given.get(m, (input_dims[m],))) for m in input_dims}
    outputs = n_outputs(spec.task, n_classes)
    return known.build(spec, dict(input_dims), outputs, levels=levels, **extra)


def check_models(params: Params, source: str = "params") -> None:
    """Every model entry against its method: a known arch, known options, a supported task.

    The model stages call this before any work, so a params mistake in any model fails the
    first of them (Snakemake already when it reads the workflow).
    """
    for name in params["models"]:
        spec = ModelSpec.from_params(params, name)
        try:
            known = method(spec.arch)
        except ConfigError as exc:
            raise ConfigError(f"{source}: models.{name}.arch: {exc}") from None
        known.validate(spec, source)
