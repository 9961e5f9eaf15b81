"""The linear floor: scikit-learn's objective solved exactly, trained and scored like any model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import eval_outputs, tiny_params_dict

from robustmer.config import validate_params
from robustmer.errors import ConfigError
from robustmer.evaluation.runner import evaluate_model
from robustmer.io import read_json
from robustmer.models.linear.network import LinearModel, fit_linear
from robustmer.models.registry import check_models
from robustmer.training.checkpoint import load_checkpoint
from robustmer.training.runner import train_model

FEATURES = {"audio": "egemaps_functionals", "video": "face_hog_mean", "text": "minilm"}
CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_pattern": {"kind": "missing_pattern"},
}


def linear_params(**entry: object) -> dict:
    raw = tiny_params_dict(seeds=[1, 2])
    raw["models"] = {"linear": {"arch": "linear", "features": FEATURES, **entry}}
    raw["corrupt"] = {"conditions": CONDITIONS}
    return validate_params(raw)


def problem(task: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(150, 6))
    if task == "regression":
        return x, x @ rng.normal(size=6) + rng.normal(0.0, 0.5, 150)
    return x, (x @ rng.normal(size=(6, 3)) + rng.normal(0.0, 1.0, (150, 3))).argmax(1)


@pytest.mark.parametrize("C", [0.05, 1.0, 20.0])
def test_logistic_fit_is_scikit_learns_optimum(C: float) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = problem("classification")
    model = LinearModel({"audio": 6}, 3)
    solver = fit_linear(model, torch.tensor(x), torch.tensor(y), "classification", C, tol=1e-9)
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(x, y)
    # The multinomial logits are defined up to a shift per feature; the L2 optimum fixes it.
    assert np.abs(model.head.weight.detach().numpy() - ref.coef_).max() < 1e-4
    assert np.abs(model.head.bias.detach().numpy() - ref.intercept_).max() < 1e-4
    assert solver["grad_max"] < 1e-6


def test_ridge_fit_is_scikit_learns_optimum() -> None:
    from sklearn.linear_model import Ridge

    x, y = problem("regression")
    model = LinearModel({"audio": 6}, 1)
    fit_linear(model, torch.tensor(x), torch.tensor(y), "regression", 0.5, tol=1e-10)
    ref = Ridge(alpha=1 / 0.5).fit(x, y)
    assert np.abs(model.head.weight.detach().numpy()[0] - ref.coef_).max() < 1e-5
    assert abs(float(model.head.bias.detach()[0]) - ref.intercept_) < 1e-5


@pytest.fixture(scope="module")
def linear_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from robustmer.corruption.condition_store import corrupt

    root = tmp_path_factory.mktemp("linear")
    params = linear_params(options={"C": [0.001, 1.0]})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        train_model(params, "linear", tiny_store, root / "linear")
        metrics = {}
        for c in CONDITIONS:
            corrupt(params, c, tiny_store, root / "conditions" / c)
            out = eval_outputs(root / "eval", "linear", c)
            model_dir, condition_dir = root / "linear", root / "conditions" / c
            metrics[c] = evaluate_model(
                params, "linear", c, tiny_store, model_dir, condition_dir, out
            )
    return {"root": root, "metrics": metrics}


def test_linear_learns_and_is_scored_under_every_missing_pattern(linear_run: dict) -> None:
    (clean,) = linear_run["metrics"]["clean"]["levels"].values()
    assert clean["ua"] > 0.6  # 4 classes: chance is 0.25
    patterns = linear_run["metrics"]["missing_pattern"]["levels"]
    assert len(patterns) == 6  # every pattern with at least one modality kept
    for name, level in patterns.items():
        assert clean["ua"] >= level["ua"] > 0.3, name  # any one modality still carries the class


def test_linear_picks_c_on_validation_and_ignores_the_seed(linear_run: dict) -> None:
    model_dir = linear_run["root"] / "linear"
    summary = read_json(model_dir / "train_summary.json")
    folds = summary["folds"]
    assert len(folds) == 6  # 3 folds x 2 seeds
    for fold in folds:
        assert fold["extra"]["C"] == 1.0  # C=0.001 shrinks the logits: a higher val_loss
        assert fold["extra"]["grad_max"] < 1e-4
    # A convex optimum from zero weights: both training seeds give the same weights.
    for k in range(3):
        a = load_checkpoint(model_dir / "seed_1" / f"fold_{k}.pt", "linear")["state_dict"]
        b = load_checkpoint(model_dir / "seed_2" / f"fold_{k}.pt", "linear")["state_dict"]
        assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"options": {"C": 0}}, "options.C"),
        ({"options": {"C": []}}, "options.C"),
        ({"options": {"max_iter": 0}}, "options.max_iter"),
        ({"options": {"penalty": "l1"}}, "unknown linear options"),
        ({"train_corruption": {"kind": "missing_rate", "rate": 0.3}}, "no train_corruption"),
    ],
)
def test_bad_linear_entries_are_refused(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_models(linear_params(**entry))
