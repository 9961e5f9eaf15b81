"""The linear floor: multinomial logistic regression (ridge regression for `task: regression`)
on the concatenated, standardised utterance vectors, fitted to its optimum.

Every table should show what a plain linear model reaches on the same features, folds,
conditions and missing-modality handling (zeros in the normalised space, models/missing.py):
a network that scores below it has learnt nothing the features did not already give. The
objective is scikit-learn's `LogisticRegression` (L2, `C`, unpenalised intercept), solved with
full-batch L-BFGS, so with one `C` the model matches scikit-learn's to solver tolerance
(docs/linear.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustmer.config import ModelSpec
from robustmer.errors import ConfigError
from robustmer.models.linear.recipe import LinearFit
from robustmer.models.method import Method
from robustmer.models.registry import register

# C: inverse L2 strength as scikit-learn's; a list picks the best on the validation rows.
OPTIONS: dict[str, Any] = {"C": 1.0, "max_iter": 1000, "tol": 1e-6}


def build(
    spec: Any,
    input_dims: dict[str, int],
    n_outputs: int,
    *,
    levels: Mapping[str, str] | None = None,
) -> Any:
    from robustmer.models.linear.network import LinearModel

    return LinearModel({m: input_dims[m] for m in spec.features}, n_outputs)


def check(spec: ModelSpec) -> None:
    """`C` positive (one value or a list), the solver settings sane, no training corruption."""
    options = METHOD.resolved_options(spec)
    where = f"models.{spec.name}.options"
    grid = options["C"] if isinstance(options["C"], list) else [options["C"]]
    if not grid or not all(
        isinstance(c, int | float) and not isinstance(c, bool) and c > 0 for c in grid
    ):
        raise ConfigError(
            f"{where}.C: a positive number or a non-empty list of them, got {options['C']!r}"
        )
    if not isinstance(options["max_iter"], int) or options["max_iter"] < 1:
        raise ConfigError(f"{where}.max_iter: a positive integer, got {options['max_iter']!r}")
    if not isinstance(options["tol"], int | float) or options["tol"] <= 0:
        raise ConfigError(f"{where}.tol: a positive number, got {options['tol']!r}")
    if spec.train_corruption is not None:
        raise ConfigError(
            f"models.{spec.name}: arch linear is fitted once to the clean training rows and takes "
            "no train_corruption; remove it (modality dropout: arch early_fusion)"
        )


METHOD = register(Method("linear", build, LinearFit(), options=OPTIONS, check=check))
