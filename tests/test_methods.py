"""The method unit: a method package plugs in without edits to shared files, and the contract holds.

A toy method is written as its own package in a temporary folder (a plug-in on the Python path,
as a user's method would be), with a recipe of its own that pretrains and then fine-tunes from
the stage-1 weights; it must pretrain, train and evaluate through the CLI like a built-in one.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import build_synthetic_store, tiny_params_dict

from robustmer.models.method import FoldContext, Recipe
from robustmer.models.registry import method, method_names

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "robustmer"

TOY = '''
"""A toy method: a linear head on the concatenated features, with a two-stage recipe."""

from robustmer.models.method import Method
from robustmer.models.registry import register


def build(spec, input_dims, n_outputs, *, levels=None):
    import torch
    from torch import nn

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.order = sorted(spec.features)
            width = sum(input_dims[m] for m in self.order)
            self.body = nn.Sequential(nn.Linear(width, spec.options.get("width", 16)), nn.ReLU())
            self.head = nn.Linear(spec.options.get("width", 16), n_outputs)

        def forward(self, inputs, lengths=None):
            return self.head(self.body(torch.cat([inputs[m] for m in self.order], 1)))

    return Toy()


class TwoFits:
    """pretrain: the task loss; train: start from the stage-1 weights, record what it saw."""

    pretrains = True

    def pretrain(self, fold):
        return fold.fit(fold.build())

    def train(self, fold):
        model = fold.build()
        model.load_state_dict(fold.stage1_state())
        result = fold.fit(model, tag="toy/")
        result.extra = {"n_train": int(len(fold.split.train)),
                        "n_unlabelled": int(len(fold.split.unlabelled))}
        return result


register(Method("toy_method", build, TwoFits(), options={"width": 16},
                tasks=frozenset({"classification"})))
'''


def _project(tmp_path: Path, options: dict | None = None) -> tuple[Path, dict[str, str]]:
    plugins = tmp_path / "plugins" / "toy_method"
    plugins.mkdir(parents=True)
    (plugins / "__init__.py").write_text(textwrap.dedent(TOY))
    params = tiny_params_dict(epochs=15)
    params["models"] = {
        "toy": {
            "arch": "toy_method",
            "features": {"audio": "egemaps_functionals", "video": "face_hog_mean"},
            "options": options or {"width": 12},
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    build_synthetic_store(tmp_path / "data/features/builtin", n_speakers=6, per_speaker=16)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "plugins")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return tmp_path, env


def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robustmer.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip


def test_a_plugin_method_trains_and_evaluates_through_the_cli(tmp_path: Path) -> None:
    root, env = _project(tmp_path)
    for args in (["corrupt", "clean"], ["pretrain", "toy"], ["train", "toy"],
                 ["evaluate", "toy", "clean"]):  # fmt: skip
        proc = _cli(root, env, *args)
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    assert sorted((root / "models/builtin/toy.pretrain").glob("seed_*/fold_*.pt"))
    summary = json.loads((root / "models/builtin/toy/train_summary.json").read_text())
    assert summary["arch"] == "toy_method"
    for fold in summary["folds"]:
        assert fold["extra"]["n_train"] == fold["n_train"]
        assert fold["extra"]["n_unlabelled"] == 0  # the synthetic store has no pool
    cell = json.loads((root / "results/builtin/metrics/toy/clean.json").read_text())
    ua = cell["levels"]["clean"]["ua"]
    assert ua > 0.5  # 4 classes: chance is 0.25


def test_a_plugin_method_checks_its_options(tmp_path: Path) -> None:
    root, env = _project(tmp_path, options={"widht": 12})
    proc = _cli(root, env, "train", "toy")
    assert proc.returncode == 2
    assert "unknown toy_method options ['widht']" in proc.stderr
    assert "(known: ['width'])" in proc.stderr


def test_train_without_pretraining_names_the_command(tmp_path: Path) -> None:
    root, env = _project(tmp_path)
    proc = _cli(root, env, "train", "toy")
    assert proc.returncode == 2
    assert "stage-1 checkpoint not found" in proc.stderr
    assert "robustmer pretrain toy --dataset builtin" in proc.stderr
    assert "dvc repro pretrain@builtin-toy" in proc.stderr


@pytest.mark.parametrize(("name", "networks"), [
    ("nmer", ["robustmer.models.nmer.network:NMER"]),
    ("imder", ["robustmer.models.imder.network:IMDer", "robustmer.models.imder.mult:MulT"]),
])  # fmt: skip
def test_declared_option_defaults_are_the_networks_defaults(name: str, networks: list) -> None:
    """A method's `options` are the one list of its settings: they must not drift from the code."""
    import importlib

    declared = dict(method(name).options)
    for ref in networks:
        module, cls = ref.split(":")
        signature = inspect.signature(getattr(importlib.import_module(module), cls))
        for key, param in signature.parameters.items():
            if key in declared:
                assert declared[key] == param.default, (ref, key)
    seen = {
        k
        for ref in networks
        for k in inspect.signature(
            getattr(importlib.import_module(ref.split(":")[0]), ref.split(":")[1])
        ).parameters
    }
    assert set(declared) <= seen  # every declared option reaches a network


def test_builtin_methods_register_from_their_packages() -> None:
    names = method_names()
    assert {"early_fusion", "mer2024_attention", "nmer", "imder", "semi", "vat"} <= set(names)
    for name in ("early_fusion", "mer2024_attention", "nmer", "imder", "semi", "vat"):
        m = method(name)
        assert m.name == name
        recipe: Recipe = m.recipe
        assert callable(recipe.train) and callable(recipe.pretrain)
    assert method("nmer").recipe.pretrains and not method("early_fusion").recipe.pretrains
    assert method("nmer").tasks == frozenset({"classification"})


def test_the_training_layer_gives_recipes_the_whole_context() -> None:
    from robustmer.training.runner import FoldJob

    members = {n for n in dir(FoldContext) if not n.startswith("_")}
    assert members <= set(dir(FoldJob)), members - set(dir(FoldJob))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


@pytest.mark.parametrize(("layer", "above"), [
    ("models", ("robustmer.training", "robustmer.evaluation", "robustmer.tracking")),
    ("features", ("robustmer.training", "robustmer.models", "robustmer.evaluation")),
    ("data", ("robustmer.training", "robustmer.models", "robustmer.evaluation")),
])  # fmt: skip
def test_layers_point_down(layer: str, above: tuple[str, ...]) -> None:
    bad = {
        f"{p.relative_to(SRC)}: {name}"
        for p in (SRC / layer).rglob("*.py")
        for name in _imported(p)
        if name.startswith(above)
    }
    assert not bad, sorted(bad)


def test_params_validation_loads_no_method_code() -> None:
    """Every stage reads params; only the model stages should load (and depend on) methods."""
    code = (
        "import sys; from robustmer.config import load_params; load_params('params.yaml'); "
        "print(sorted(m for m in sys.modules if m.startswith('robustmer.models')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.strip() in ("[]", "['robustmer.models']"), out
