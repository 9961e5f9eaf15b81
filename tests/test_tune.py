"""`robustmer tune`: a random search on the tiny store picks its best validation trial and
writes a file that `train` takes (reproducing that trial's score); two workers sharing one
journal run every trial exactly once, with the same values a single worker draws; test rows
never reach a trial; pruned trials stop early; bad spaces and files are refused by name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_params_dict

from robustmer.config import validate_params
from robustmer.errors import ConfigError
from robustmer.io import read_json
from robustmer.training.runner import train_model
from robustmer.tuning.space import search_space
from robustmer.tuning.study import tune_model

SPACE = {
    "hidden_dim": {"choices": [16, 32]},
    "dropout": {"low": 0.0, "high": 0.4, "step": 0.1},
    "train.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
}


def tune_raw(trials: int = 6, space: dict | None = None, **tune: Any) -> dict[str, Any]:
    """Plain (unvalidated) params: fusion_mlp on the tiny store, one seed, a small space."""
    raw = copy.deepcopy(tiny_params_dict(epochs=6, patience=0, seeds=[1]))
    raw["models"] = {"fusion_mlp": raw["models"]["fusion_mlp"]}
    raw["tune"] = {"models": ["fusion_mlp"], "trials": trials, "pruner": "none",
                   "spaces": {"fusion_mlp": space or SPACE}, **tune}  # fmt: skip
    return raw


@pytest.fixture(autouse=True)
def _mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


@pytest.fixture(scope="module")
def single(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tune-single")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        best = root / "tuned/builtin/fusion_mlp.yaml"
        summary = tune_model(tune_raw(), "fusion_mlp", "builtin", tiny_store, root / "tune",
                             best_file=best)  # fmt: skip
    return {"root": root, "summary": summary, "dir": root / "tune", "best": best}


def trials_table(tune_dir: Path) -> list[dict[str, str]]:
    lines = (tune_dir / "trials.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def test_a_random_search_keeps_the_best_validation_trial(single: dict[str, Any]) -> None:
    rows = trials_table(single["dir"])
    assert [int(r["number"]) for r in rows] == list(range(6))
    assert {r["state"] for r in rows} == {"COMPLETE"}
    values = {int(r["number"]): float(r["value"]) for r in rows}
    best = single["summary"]["best"]
    assert best["value"] == max(values.values()) and values[best["number"]] == best["value"]
    assert len({r["param.hidden_dim"] + r["param.dropout"] + r["param.train.lr"] for r in rows}) > 1
    for r in rows:
        assert 1e-3 <= float(r["param.train.lr"]) <= 1e-2
        tenths = float(r["param.dropout"]) * 10
        assert abs(tenths - round(tenths)) < 1e-9  # step 0.1
    written = yaml.safe_load(single["best"].read_text())
    assert written == {"dropout": best["params"]["dropout"],
                       "hidden_dim": best["params"]["hidden_dim"],
                       "train": {"lr": best["params"]["train.lr"]}}  # fmt: skip
    assert "Applied over models.fusion_mlp" in single["best"].read_text()
    assert single["summary"]["best_file"] == single["best"].as_posix()


def test_train_applies_the_result_and_reproduces_the_trial(
    single: dict[str, Any], tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stage applies tuned/<dataset>/<model>.yaml while tune.models lists the model."""
    monkeypatch.chdir(single["root"])
    params = validate_params(tune_raw())
    best = single["summary"]["best"]
    assert params["models"]["fusion_mlp"]["hidden_dim"] == best["params"]["hidden_dim"]
    assert params["models"]["fusion_mlp"]["train"]["lr"] == best["params"]["train.lr"]
    train_model(params, "fusion_mlp", tiny_store, tmp_path / "model")
    folds = read_json(tmp_path / "model" / "train_summary.json")["folds"]
    assert np.mean([f["val"]["val_ua"] for f in folds]) == pytest.approx(best["value"], abs=1e-12)


def test_two_workers_share_the_trials_exactly_once(
    single: dict[str, Any], tiny_store: Path, tmp_path: Path
) -> None:
    """Two processes on one journal: six trials, numbers 0-5 each run once, by both workers,
    with the values a single worker drew for the same numbers (random sampler)."""
    from robustmer.tuning.study import write_summary_from_storage
    from robustmer.workers import worker_pool

    args = (tune_raw(), "fusion_mlp", "builtin", tiny_store, tmp_path / "tune")
    with worker_pool(2) as pool:
        for future in [pool.submit(tune_model, *args) for _ in range(2)]:
            future.result()
    summary = write_summary_from_storage(*args)
    rows = trials_table(tmp_path / "tune")
    assert sorted(int(r["number"]) for r in rows) == list(range(6))
    assert {r["state"] for r in rows} == {"COMPLETE"} and summary["counts"] == {"COMPLETE": 6}
    assert len({r["worker"] for r in rows}) == 2
    one = {r["number"]: {k: v for k, v in r.items() if k.startswith("param.")}
           for r in trials_table(single["dir"])}  # fmt: skip
    two = {r["number"]: {k: v for k, v in r.items() if k.startswith("param.")} for r in rows}
    assert one == two


def test_test_rows_never_reach_a_trial(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per fold of every trial, each batch trained on and each row scored is one of that fold's
    training or validation rows, never one of its test rows."""
    from robustmer.data.model_data import FoldTensors
    from robustmer.training import loop, runner

    current: dict[str, Any] = {}
    touched: dict[int, set[int]] = {}
    splits: dict[int, Any] = {}
    train_fold, batch, predict = runner._train_fold, FoldTensors.batch, loop.predict_logits

    def tracking_fold(run: Any, split: Any, replicate: int) -> Any:
        current["fold"] = split.fold
        splits[split.fold] = split
        return train_fold(run, split, replicate)

    def record_batch(self: FoldTensors, indices: np.ndarray) -> Any:
        touched.setdefault(current["fold"], set()).update(int(i) for i in indices)
        return batch(self, indices)

    def record_predict(model: Any, tensors: Any, indices: Any, *args: Any, **kw: Any) -> Any:
        touched.setdefault(current["fold"], set()).update(int(i) for i in indices)
        return predict(model, tensors, indices, *args, **kw)

    monkeypatch.setattr(runner, "_train_fold", tracking_fold)
    monkeypatch.setattr(FoldTensors, "batch", record_batch)
    monkeypatch.setattr(loop, "predict_logits", record_predict)
    tune_model(tune_raw(trials=2), "fusion_mlp", "builtin", tiny_store, tmp_path / "tune")
    assert sorted(touched) == sorted(splits) == [0, 1, 2]
    for fold, rows in touched.items():
        split = splits[fold]
        assert rows <= {int(i) for i in np.concatenate([split.train, split.val])}, fold
        assert not rows & {int(i) for i in split.test}, fold


def test_a_trial_worse_than_the_median_is_pruned(tiny_store: Path, tmp_path: Path) -> None:
    space = {"train.lr": {"choices": [0.01, 1.0e-7]}}
    raw = tune_raw(trials=6, space=space, pruner="median", startup_trials=1)
    summary = tune_model(raw, "fusion_mlp", "builtin", tiny_store, tmp_path / "tune")
    rows = trials_table(tmp_path / "tune")
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(r["param.train.lr"] == "1e-07" for r in pruned), rows
    assert summary["best"]["params"]["train.lr"] == 0.01


def test_a_continued_study_must_be_the_same_search(tiny_store: Path, tmp_path: Path) -> None:
    tune_model(tune_raw(trials=1), "fusion_mlp", "builtin", tiny_store, tmp_path / "tune")
    other = tune_raw(trials=2, space={"hidden_dim": {"choices": [8, 16]}})
    with pytest.raises(ConfigError, match="another search space"):
        tune_model(other, "fusion_mlp", "builtin", tiny_store, tmp_path / "tune")
    # The same search continues: one more trial.
    summary = tune_model(tune_raw(trials=2), "fusion_mlp", "builtin", tiny_store,
                         tmp_path / "tune")  # fmt: skip
    assert summary["counts"] == {"COMPLETE": 2}


def test_a_trial_left_running_by_a_dead_worker_is_run_again(
    tiny_store: Path, tmp_path: Path
) -> None:
    import socket

    import optuna

    from robustmer.tuning.study import storage_for

    pid = 2**22 + 17  # above the default pid_max: never a live process
    study = optuna.create_study(storage=storage_for(None, tmp_path / "tune"),
                                study_name="builtin-fusion_mlp", direction="maximize")  # fmt: skip
    orphan = study.ask({"hidden_dim": optuna.distributions.CategoricalDistribution([16, 32])})
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{pid}")
    left = orphan.params
    summary = tune_model(tune_raw(trials=2, space={"hidden_dim": {"choices": [16, 32]}}),
                         "fusion_mlp", "builtin", tiny_store, tmp_path / "tune")  # fmt: skip
    assert summary["counts"] == {"COMPLETE": 2}
    rows = trials_table(tmp_path / "tune")
    assert [int(r["number"]) for r in rows] == [1, 2]  # trial 0 was the orphan: not counted
    assert rows[0]["param.hidden_dim"] == repr(left["hidden_dim"])  # its values ran again


@pytest.mark.parametrize(("space", "message"), [
    (None, "tune.spaces has no search space for 'fusion_mlp'"),
    ({"train.lr": {"low": 0.0, "high": 0.1, "log": True}}, "a log scale needs low > 0"),
    ({"dropout": {"low": 0.5, "high": 0.1}}, "low must be below high"),
])  # fmt: skip
def test_bad_spaces_are_refused_with_the_key(space: dict | None, message: str) -> None:
    raw = tune_raw(space=space or SPACE)
    if space is None:  # a model outside tune.models: its space is checked when it is searched
        raw["tune"].update(spaces={}, models=[])
    with pytest.raises(ConfigError, match=message):
        search_space(validate_params(raw), "fusion_mlp")


def test_a_bad_key_in_a_space_fails_params_loading() -> None:
    raw = tune_raw(space={"train.lr": {"choices": [0.1]}, "features.audio": {"choices": ["x"]}})
    with pytest.raises(ConfigError, match=r"tune\.spaces\.fusion_mlp"):
        validate_params(raw)


def test_a_missing_or_bad_result_is_refused(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = validate_params(tune_raw())  # loading does not need the result yet
    with pytest.raises(ConfigError, match="run `robustmer tune fusion_mlp --dataset builtin`"):
        train_model(params, "fusion_mlp", tiny_store, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    (tmp_path / "tuned/builtin").mkdir(parents=True)
    (tmp_path / "tuned/builtin/fusion_mlp.yaml").write_text("features: {audio: x}\n")
    with pytest.raises(ConfigError, match="must map keys of a model entry"):
        validate_params(tune_raw())
    (tmp_path / "tuned/builtin/fusion_mlp.yaml").unlink()
    raw = tune_raw()
    raw["tune"]["models"] = ["fusion_mlp", "nope"]
    with pytest.raises(ConfigError, match=r"tune\.models: 'nope' is not in `models`"):
        validate_params(raw)
    raw = tune_raw()
    raw["tune"]["spaces"] = {}
    with pytest.raises(ConfigError, match=r"has no search space; add tune\.spaces\.fusion_mlp"):
        validate_params(raw)


def test_the_cli_searches_listed_models_and_notes_the_others(tmp_path: Path) -> None:
    """`robustmer tune` as the pipeline runs it: a listed model is searched and its result
    applied by `train`; any other model gets an empty result and no search."""
    import subprocess
    import sys

    from conftest import build_synthetic_store

    raw = tune_raw(trials=2)
    raw["models"]["audio_mlp"] = {"arch": "early_fusion",
                                  "features": {"audio": "egemaps_functionals"},
                                  "hidden_dim": 16}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    build_synthetic_store(tmp_path / "data/features/builtin", n_speakers=6, per_speaker=12)
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "robustmer.cli", *args], cwd=tmp_path,
                              capture_output=True, text=True, env=env)  # fmt: skip

    assert cli("validate").returncode == 0
    other = cli("tune", "audio_mlp")
    assert other.returncode == 0 and "not in tune.models" in other.stdout, other.stderr
    assert yaml.safe_load((tmp_path / "tuned/builtin/audio_mlp.yaml").read_text()) == {}
    searched = cli("tune", "fusion_mlp", "--workers", "2")
    assert searched.returncode == 0, searched.stderr
    assert "tuned fusion_mlp: 2 complete; best trial" in searched.stdout
    best = yaml.safe_load((tmp_path / "tuned/builtin/fusion_mlp.yaml").read_text())
    assert set(best) == {"dropout", "hidden_dim", "train"}
    summary = read_json(tmp_path / "models/builtin/fusion_mlp.tune/tune_summary.json")
    assert summary["counts"] == {"COMPLETE": 2}
    assert cli("train", "fusion_mlp").returncode == 0
    trained = read_json(tmp_path / "models/builtin/fusion_mlp/train_summary.json")
    ua = np.mean([f["val"]["val_ua"] for f in trained["folds"]])
    assert ua == pytest.approx(summary["best"]["value"], abs=1e-12)
