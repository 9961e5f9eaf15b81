"""A model's search space (`tune.spaces.<model>` in params.yaml) and how a trial's values become
a model entry.

Keys are paths into the model entry: `hidden_dim`, `dropout`, `num_layers`, `options.<k>`,
`train.<k>` or `pretrain.<k>`. A dimension is `{choices: [...]}` or a range `{low, high}` with
optional `log`, `step` and `int`. Nothing here imports Optuna: the CLI checks a space before
any training starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robustmer.config import TUNABLE_KEYS, Params, merge_entry
from robustmer.errors import ConfigError


@dataclass(frozen=True)
class Dimension:
    """One searched key: categorical `choices`, or a range [low, high] (log, step, int)."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this dimension can produce."""
        if self.choices is not None:
            return value in self.choices
        assert self.low is not None and self.high is not None
        if not isinstance(value, int | float) or not self.low <= value <= self.high:
            return False
        if self.integer and int(value) != value:
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True


def search_space(params: Params, model: str) -> list[Dimension]:
    """The model's dimensions, checked (an error names the key and the fix)."""
    spaces = params.get("tune", {}).get("spaces", {})
    if model not in params["models"]:
        raise ConfigError(f"model {model!r} is not in params.yaml `models`")
    if model not in spaces:
        known = ", ".join(sorted(spaces)) or "none"
        raise ConfigError(
            f"tune.spaces has no search space for {model!r} (spaces given for: {known}); add "
            f"e.g. `tune.spaces.{model}: {{dropout: {{choices: [0.2, 0.3]}}, "
            "train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}` (docs/tuning.md)"
        )
    out = []
    for key, spec in spaces[model].items():
        where = f"tune.spaces.{model}.{key}"
        if key.split(".")[0] not in TUNABLE_KEYS:
            raise ConfigError(f"{where}: not a key a search may set ({sorted(TUNABLE_KEYS)})")
        if "choices" in spec:
            out.append(Dimension(key, choices=tuple(spec["choices"])))
            continue
        low, high = float(spec["low"]), float(spec["high"])
        log, step, integer = bool(spec.get("log")), spec.get("step"), bool(spec.get("int"))
        if not low < high:
            raise ConfigError(f"{where}: low must be below high, got {low} and {high}")
        if log and (low <= 0 or step is not None):
            raise ConfigError(f"{where}: a log scale needs low > 0 and no step")
        if integer and (int(low) != low or int(high) != high):
            raise ConfigError(f"{where}: an integer range needs whole bounds")
        out.append(Dimension(key, low=low, high=high, log=log,
                             step=None if step is None else float(step),
                             integer=integer))  # fmt: skip
    return out


def overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat trial values (`train.lr: 0.001`) -> model entry keys (`train: {lr: 0.001}`)."""
    out: dict[str, Any] = {}
    for key, value in sorted(values.items()):
        head, _, rest = key.partition(".")
        if rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    return out


def with_values(raw: dict[str, Any], model: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the params with the trial's values set on `model` (they win over its entry)."""
    out = dict(raw)
    out["models"] = {**raw["models"], model: merge_entry(raw["models"][model], overrides(values))}
    return out
