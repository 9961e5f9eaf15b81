"""An interrupted train or pretrain loses nothing: the previous model stays, the rerun resumes.

Interruptions are simulated in-process by raising KeyboardInterrupt (what Ctrl-C and, through
robustmer/signals.py, SIGTERM become) right after a chosen epoch checkpoint is saved. The
rerun must end with checkpoints byte-identical to a run that was never interrupted, for a plain
model with training corruption (its random streams resume too) and for SEMI, whose recipe
fits several times per fold (finished fits are replayed, the one in progress resumes). Real
signals sent to the CLI are tested in test_signals.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from conftest import build_synthetic_store, tiny_params_dict

from robustmer.config import validate_params
from robustmer.io import read_json
from robustmer.training import resume
from robustmer.training.runner import pretrain_model, train_model

DETERMINISTIC = ("fold", "train_seed", "checkpoint", "checkpoint_sha256", "best_epoch",
                 "epochs_run", "val", "n_train", "n_val", "n_test", "extra")  # fmt: skip


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checkpoints(folder: Path) -> dict[str, str]:
    return {k: v for k, v in folder_digest(folder).items() if k.endswith(".pt")}


def timeless(value: Any) -> Any:
    """`value` without its wall-clock entries (keys ending in "seconds")."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if not str(k).endswith("seconds")}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def rows(folder: Path, summary: str = "train_summary.json") -> list[dict[str, Any]]:
    """A summary's fold rows without what differs between any two runs (times, run ids)."""
    folds = read_json(folder / summary)["folds"]
    return [timeless({k: f.get(k) for k in DETERMINISTIC}) for f in folds]


def run_statuses(uri: str) -> dict[str, list[str]]:
    """Run name -> statuses of the runs with that name (oldest first)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    out: dict[str, list[str]] = {}
    for experiment in client.search_experiments():
        found = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
        for run in found:
            out.setdefault(run.info.run_name, []).append(run.info.status)
    return out


def corrupted_params(seed: int = 7) -> dict:
    raw = tiny_params_dict(checkpoint_every_s=0, epochs=8, patience=0)
    raw["seed"] = seed
    raw["models"] = {
        "fusion_mlp": {
            **raw["models"]["fusion_mlp"],
            "train_corruption": {"kind": "missing_rate", "rate": 0.3},
        }
    }
    return validate_params(raw)


def test_interrupted_training_keeps_the_previous_model_and_resumes_identically(
    tiny_store: Path,
    tmp_path: Path,
    mlflow_db: str,
    interrupt_at: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = corrupted_params()
    train_model(params, "fusion_mlp", tiny_store, tmp_path / "straight")
    expected = checkpoints(tmp_path / "straight")
    assert len(expected) == 3  # one seed, three folds

    target = tmp_path / "models" / "fusion_mlp"
    train_model(corrupted_params(seed=8), "fusion_mlp", tiny_store, target)  # the previous model
    previous = folder_digest(target)

    interrupt_at(fit=0, epoch=3, fold=1)
    with pytest.raises(KeyboardInterrupt):
        train_model(params, "fusion_mlp", tiny_store, target)
    assert folder_digest(target) == previous, "the previous model folder changed"
    building = resume.building_dir(target)
    assert (building / "seed_1" / "fold_0.pt").is_file()  # fold 0 finished before the stop
    statuses = run_statuses(mlflow_db)
    assert statuses["fusion_mlp"][-1] == "KILLED"
    assert statuses["seed_1_fold_1"][-1] == "KILLED"

    with caplog.at_level("INFO"):
        train_model(params, "fusion_mlp", tiny_store, target)
    assert "resuming training after epoch 3 of 8" in caplog.text
    assert checkpoints(target) == expected
    assert rows(target) == rows(tmp_path / "straight")
    assert not building.exists()
    summary = read_json(target / "train_summary.json")
    assert [f.get("reused", False) for f in summary["folds"]] == [True, False, False]


def semi_params() -> dict:
    """test_semi's tiny SEMI with one self-training round, epoch checkpoints every epoch."""
    from test_semi import semi_params as tiny_semi

    params = tiny_semi(rounds=1)
    params["train"]["checkpoint_every_s"] = 0
    params["models"]["semi"]["train"].update(epochs=6, patience=0)
    return params


def test_semi_resumes_pretraining_and_replays_finished_rounds(
    tmp_path: Path, mlflow_db: str, interrupt_at: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Pretraining draws noise from the recipe's own generator (passed as a stream); training
    fits round 0, pseudo-labels the pool with it, then fits round 1: stopped in round 1, the
    rerun must replay round 0 from its record and continue round 1 from its epoch."""
    store = build_synthetic_store(tmp_path / "store", n_speakers=6, per_speaker=20,
                                  unlabelled_fraction=0.5)  # fmt: skip
    params = semi_params()
    straight = tmp_path / "straight"
    pretrain_model(params, "semi", store, straight / "semi.pretrain")
    train_model(params, "semi", store, straight / "semi", pretrain_dir=straight / "semi.pretrain")

    models = tmp_path / "models"
    interrupt_at(fit=0, epoch=2, fold=0)
    with pytest.raises(KeyboardInterrupt):
        pretrain_model(params, "semi", store, models / "semi.pretrain")
    assert not (models / "semi.pretrain").exists()
    pretrain_model(params, "semi", store, models / "semi.pretrain")
    assert checkpoints(models / "semi.pretrain") == checkpoints(straight / "semi.pretrain")

    interrupt_at(fit=1, epoch=2, fold=2)
    with pytest.raises(KeyboardInterrupt):
        train_model(params, "semi", store, models / "semi", pretrain_dir=models / "semi.pretrain")
    unit = resume.building_dir(models / "semi") / "resume" / "seed_1" / "fold_2"
    assert (unit / "fit_0.done.pt").is_file() and (unit / "fit_1.epoch.pt").is_file()
    with caplog.at_level("INFO"):
        train_model(params, "semi", store, models / "semi", pretrain_dir=models / "semi.pretrain")
    assert "resuming training after epoch 2 of 6" in caplog.text
    assert checkpoints(models / "semi") == checkpoints(straight / "semi")
    assert rows(models / "semi") == rows(straight / "semi")


def test_a_partial_build_of_other_inputs_is_discarded(
    tiny_store: Path, tmp_path: Path, mlflow_db: str, interrupt_at: Any
) -> None:
    """Changed params between the stop and the rerun: nothing of the old build is reused."""
    target = tmp_path / "fusion_mlp"
    interrupt_at(fit=0, epoch=2, fold=1)
    with pytest.raises(KeyboardInterrupt):
        train_model(corrupted_params(), "fusion_mlp", tiny_store, target)
    other = corrupted_params(seed=9)
    train_model(other, "fusion_mlp", tiny_store, target)
    summary = read_json(target / "train_summary.json")
    assert not any(f.get("reused") for f in summary["folds"])
    train_model(other, "fusion_mlp", tiny_store, tmp_path / "straight")
    assert checkpoints(target) == checkpoints(tmp_path / "straight")


def test_an_interrupted_evaluation_keeps_its_predictions_and_ends_identically(
    tiny_store: Path,
    tmp_path: Path,
    mlflow_db: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from conftest import eval_outputs

    from robustmer.corruption.condition_store import corrupt
    from robustmer.evaluation import partial
    from robustmer.evaluation.runner import evaluate_model

    params = corrupted_params()
    params["corrupt"]["conditions"] = {"drop": {"kind": "missing_rate", "levels": [0.0, 0.5]}}
    train_model(params, "fusion_mlp", tiny_store, tmp_path / "m")
    corrupt(params, "drop", tiny_store, tmp_path / "drop")

    def evaluate(results: Path) -> dict[str, Path]:
        out = eval_outputs(results, "fusion_mlp", "drop")
        evaluate_model(params, "fusion_mlp", "drop", tiny_store, tmp_path / "m",
                       tmp_path / "drop", out)  # fmt: skip
        return out

    straight = evaluate(tmp_path / "straight")
    original = partial.PredictionCache.get
    computed: list[str] = []

    def stop_after_four(self: partial.PredictionCache, key: str, *args: Any) -> Any:
        value = original(self, key, *args)
        computed.append(key)
        if len(computed) == 4:  # level 0.0 done (3 folds), one fold of level 0.5
            raise KeyboardInterrupt("test")
        return value

    monkeypatch.setattr(partial.PredictionCache, "get", stop_after_four)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tmp_path / "resumed")
    kept = partial.partial_dir(eval_outputs(tmp_path / "resumed", "fusion_mlp", "drop")["scores"])
    assert len(list(kept.glob("*.npy"))) == 4
    monkeypatch.setattr(partial.PredictionCache, "get", original)
    with caplog.at_level("INFO"):
        resumed = evaluate(tmp_path / "resumed")
    assert "resuming an interrupted evaluation (4 prediction(s) kept)" in caplog.text
    for key in ("scores", "predictions", "confusion_csv", "metrics"):
        assert resumed[key].read_bytes() == straight[key].read_bytes(), key
    assert not kept.exists()


@pytest.mark.parametrize("schedule", [
    {"lr_scheduler": "cosine", "warmup_epochs": 1, "min_lr": 1.0e-4},
    {"lr_scheduler": "plateau", "plateau_patience": 0},
    {"average_last": 4},
])  # fmt: skip
def test_a_fit_with_a_schedule_resumes_identically(
    tiny_store: Path, tmp_path: Path, mlflow_db: str, interrupt_at: Any, schedule: dict
) -> None:
    """The schedulers' states (and a weight average's) come back with the fit, and restoring
    them leaves the selection metric alone (restoring once overwrote its name, so a resumed fit
    failed on `per_step`)."""
    raw = tiny_params_dict(checkpoint_every_s=0, epochs=5, patience=0, seeds=[1], **schedule)
    raw["models"] = {"fusion_mlp": raw["models"]["fusion_mlp"]}
    params = validate_params(raw)
    train_model(params, "fusion_mlp", tiny_store, tmp_path / "straight")
    interrupt_at(fit=0, epoch=2, fold=0)
    with pytest.raises(KeyboardInterrupt):
        train_model(params, "fusion_mlp", tiny_store, tmp_path / "models")
    train_model(params, "fusion_mlp", tiny_store, tmp_path / "models")
    assert checkpoints(tmp_path / "models") == checkpoints(tmp_path / "straight")
    assert rows(tmp_path / "models") == rows(tmp_path / "straight")
