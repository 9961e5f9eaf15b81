"""`train.workers`: the (seed, fold) units of a model trained side by side in worker processes
give the checkpoints and summary rows of one-after-the-other training, each unit's MLflow fold
run is logged by the parent with the worker's epochs, and an interrupted parallel build resumes
to the same result; `robustmer evaluate` predicts those units in workers too, to the same
bytes; workers never outnumber what the usable cores hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_params_dict
from test_resume import checkpoints, rows, run_statuses

from robustmer.config import validate_params
from robustmer.io import read_json
from robustmer.training import resume
from robustmer.training.runner import train_model


def params(workers: int) -> dict[str, Any]:
    raw = tiny_params_dict(checkpoint_every_s=0, epochs=6, patience=0, seeds=[1, 2],
                           workers=workers)  # fmt: skip
    raw["models"] = {"fusion_mlp": raw["models"]["fusion_mlp"]}
    return validate_params(raw)


@pytest.fixture(scope="module")
def one_at_a_time(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "fusion_mlp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out.parent}/mlflow.db")
        train_model(params(1), "fusion_mlp", tiny_store, out)
    return out


def test_parallel_units_equal_serial_units_and_log_their_runs(
    tiny_store: Path, tmp_path: Path, mlflow_db: str, one_at_a_time: Path
) -> None:
    import mlflow

    target = tmp_path / "fusion_mlp"
    train_model(params(2), "fusion_mlp", tiny_store, target)
    assert len(checkpoints(target)) == 6  # two seeds, three folds
    assert checkpoints(target) == checkpoints(one_at_a_time)
    assert rows(target) == rows(one_at_a_time)

    client = mlflow.MlflowClient(tracking_uri=mlflow_db)
    summary = read_json(target / "train_summary.json")
    for fold in summary["folds"]:
        run = client.get_run(fold["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"seed_{fold['train_seed']}_fold_{fold['fold']}"
        assert run.data.tags["mlflow.parentRunId"] == summary["mlflow_run_id"]
        assert run.data.tags["robustmer.checkpoint_sha256"] == fold["checkpoint_sha256"]
        assert run.data.params["test_speakers"] == ",".join(fold["test_speakers"])
        history = client.get_metric_history(run.info.run_id, "val_ua")
        assert [m.step for m in history] == list(range(1, 7))  # every epoch of the worker
        assert run.data.metrics["best_epoch"] == fold["best_epoch"]


def test_an_interrupted_parallel_build_resumes_to_the_same_result(
    tiny_store: Path, tmp_path: Path, mlflow_db: str, one_at_a_time: Path, interrupt_at: Any
) -> None:
    target = tmp_path / "fusion_mlp"
    interrupt_at(fit=0, epoch=3, fold=1, seed=2)  # raised in the worker training that unit
    with pytest.raises(KeyboardInterrupt):
        train_model(params(2), "fusion_mlp", tiny_store, target)
    assert not target.exists()
    building = resume.building_dir(target)
    assert (building / "resume" / "seed_2" / "fold_1" / "fit_0.epoch.pt").is_file()
    assert run_statuses(mlflow_db)["fusion_mlp"] == ["KILLED"]

    train_model(params(2), "fusion_mlp", tiny_store, target)
    assert checkpoints(target) == checkpoints(one_at_a_time)
    assert rows(target) == rows(one_at_a_time)
    assert not building.exists()
    assert run_statuses(mlflow_db)["fusion_mlp"] == ["KILLED", "FINISHED"]


@pytest.mark.parametrize(
    ("cores", "threads", "workers", "expected"),
    [(2, 1, 2, 2), (2, 2, 2, 1), (4, 2, 8, 2), (1, 1, 2, 1), (8, 3, 8, 2)],
)
def test_workers_times_threads_fit_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    cores: int, threads: int, workers: int, expected: int,
) -> None:  # fmt: skip
    """Training and evaluation both size their pools with `device.unit_workers`."""
    import logging

    import torch

    from robustmer import device

    monkeypatch.setattr(device, "usable_cores", lambda: cores)
    with caplog.at_level(logging.INFO, logger=device.log.name):
        assert device.unit_workers(workers, threads, 15, torch.device("cpu"), "nmer") == expected
    lowered = [r.getMessage() for r in caplog.records if "lowered" in r.getMessage()]
    assert bool(lowered) == (workers > expected)
    assert device.unit_workers(workers, threads, 1, torch.device("cpu"), "nmer") == 1  # one unit


@pytest.mark.parametrize("condition", [
    {"kind": "missing_rate", "levels": [0.0, 0.5]},
    {"kind": "feature_noise", "schedule": "nmer", "noise": "gaussian", "levels": [20, 60]},
])  # fmt: skip
def test_parallel_evaluation_scores_as_one_process(
    tiny_store: Path, tmp_path: Path, mlflow_db: str, monkeypatch: pytest.MonkeyPatch,
    condition: dict[str, Any],
) -> None:  # fmt: skip
    """The (seed, fold) units predict in worker processes; the cell's files are the same bytes
    (feature noise draws from each unit's seed, so the draws must match too)."""
    from conftest import eval_outputs

    from robustmer.corruption.condition_store import corrupt
    from robustmer.evaluation import runner as eval_runner

    spied: list[int] = []
    original = eval_runner._predict_units

    def spy(*args: Any) -> Any:
        spied.append(args[2])
        return original(*args)

    monkeypatch.setattr(eval_runner, "_predict_units", spy)
    cells = {}
    for workers in (1, 2):
        p = params(workers)
        p["corrupt"]["conditions"] = {"cond": condition}
        p = validate_params(p)
        if workers == 1:
            train_model(p, "fusion_mlp", tiny_store, tmp_path / "m")
            corrupt(p, "cond", tiny_store, tmp_path / "cond")
        out = eval_outputs(tmp_path / f"results{workers}", "fusion_mlp", "cond")
        eval_runner.evaluate_model(p, "fusion_mlp", "cond", tiny_store, tmp_path / "m",
                                   tmp_path / "cond", out)  # fmt: skip
        cells[workers] = out
    assert spied == [2]  # the one-worker cell ran in this process
    for key in ("scores", "predictions", "confusion_csv", "metrics"):
        assert cells[2][key].read_bytes() == cells[1][key].read_bytes(), key
