"""`robustmer train <model>`: speaker-independent cross-validation of one model from params.yaml.

Per training seed (`train.seeds`) and fold: fit the normaliser on the training speakers, train
with early stopping on the validation speakers, save `seed_<s>/fold_<k>.pt`. The folder is built
beside the previous one and swapped in at the end; an interrupted run resumes where it stopped
(training/resume.py). The folder also
gets `train_summary.json` (best epochs, validation metrics, set sizes, MLflow run ids, checkpoint
sha256), which `robustmer evaluate` and `robustmer lineage` read. The MLflow run id and experiment
id also go to `<out_dir>/../mlflow-runs/<out_dir name>.json`, a top-level DVC metrics folder, so
`dvc exp show` links each experiment to its MLflow run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustmer.config import ModelSpec, Params, TrainConfig, require_tuned
from robustmer.corruption.training import TrainingCorruption
from robustmer.data.model_data import (
    NORM_EPS,
    FoldSplit,
    FoldTensors,
    ModelData,
    Normaliser,
    data_folds,
    load_model_data,
    unavailable,
)
from robustmer.data.store import FeatureStore
from robustmer.device import configure_threads, resolve_device, unit_workers
from robustmer.errors import DataError
from robustmer.io import atomic_dir, sha256_file, write_json
from robustmer.metrics import task_metric_keys
from robustmer.models.method import FitResult, Objective
from robustmer.models.registry import build_model, check_models, method
from robustmer.paths import PRETRAIN_SUMMARY, SUMMARY_FILE, dataset_of, run_record_path
from robustmer.seeding import derive_seed, seed_everything
from robustmer.tracking import mlflow_run
from robustmer.tracking.lineage import lineage_tags
from robustmer.training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from robustmer.training.loop import FitJob, fit, fit_streams, predict_logits
from robustmer.training.resume import (
    Building,
    Stream,
    inputs_digest,
    random_states,
    restore_random_states,
    source_digest,
)

log = logging.getLogger(__name__)


def fold_seed(
    params: Params, model_name: str, fold: int, replicate: int, stage: str = "train"
) -> int:
    """The torch/shuffle seed of one (model, fold, training seed) run of a stage."""
    return derive_seed(params["seed"], stage, model_name, fold, replicate)


def run_params(params: Params, spec: ModelSpec) -> dict[str, str]:
    """The flat parameter set logged on the parent run: model spec, training, CV, data, seed."""
    model = {k: v for k, v in asdict(spec).items() if k != "name"}
    return mlflow_run.flatten_params(
        {
            "model": model,
            "train": params["train"],
            "cv": params["cv"],
            "dataset": params["dataset"],
            "seed": params["seed"],
            "device": params["device"],
        }
    )


def pretrain_model(params: Params, model_name: str, store_dir: Path, out_dir: Path) -> Path:
    """Stage-1 pretraining of every fold and seed (NMER, IMDer); a note for methods without one.

    Every model gets the folder, so `train` can depend on it uniformly in DVC and Snakemake.
    """
    check_models(params)
    spec = ModelSpec.from_params(params, model_name)
    reason = unavailable(FeatureStore(store_dir), spec)
    if reason is not None:
        return write_skipped(Path(out_dir), model_name, "pretrain", reason)
    if not method(spec.arch).recipe.pretrains:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / PRETRAIN_SUMMARY, {"model": model_name, "pretraining": "none"})
        return out_dir
    return train_model(params, model_name, store_dir, out_dir, stage="pretrain")


def write_skipped(out_dir: Path, model_name: str, stage: str, reason: str) -> Path:
    """The folder of a model that cannot run on this dataset: its summary says why (evaluate and
    the report read it), so DVC and Snakemake get their outputs and the grid goes on."""
    log.warning("skipped %s %s: %s", stage, model_name, reason)
    name = SUMMARY_FILE if stage == "train" else PRETRAIN_SUMMARY
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / name, {"model": model_name, "stage": stage, "skipped": reason})
    return out_dir


def train_model(
    params: Params,
    model_name: str,
    store_dir: Path,
    out_dir: Path,
    stage: str = "train",
    pretrain_dir: Path | None = None,
    on_unit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train every fold and seed of `model_name` into `out_dir` (checkpoints and summary).

    Each (fold, seed) is trained by the method's recipe (`Recipe.pretrain` or `Recipe.train`)
    with a `FoldJob` as its context; `pretrain_dir` holds the stage-1 weights of methods that
    pretrain. `on_unit` receives each (seed, fold) summary as it finishes (a search reports its
    validation score and may stop the training by raising).
    """
    check_models(params)
    require_tuned(params, model_name)
    spec = ModelSpec.from_params(params, model_name)
    cfg = TrainConfig.from_params(params, spec, stage)
    store = FeatureStore(store_dir)
    reason = unavailable(store, spec)
    if reason is not None:
        return write_skipped(Path(out_dir), model_name, stage, reason)
    data = load_model_data(store, spec, frame_inputs=method(spec.arch).frame_inputs)
    folds = data_folds(data, cfg.val_speakers, cfg.seed)
    device = resolve_device(cfg.device)
    configure_threads(cfg.num_threads, device)
    out_dir = Path(out_dir)
    tags = {
        **lineage_tags(params, store, data.feature_names),
        "robustmer.model": model_name,
        "robustmer.arch": spec.arch,
        "robustmer.stage": stage,
        "robustmer.model_dir": out_dir.as_posix(),
    }
    run_name = model_name if stage == "train" else f"{model_name}-{stage}"
    started = time.perf_counter()
    building = Building(out_dir, _inputs_digest(params, spec, stage, tags, device, pretrain_dir))
    fold_run = FoldRun(params, spec, cfg, data, stage, building.root, device, tags, pretrain_dir,
                       building)  # fmt: skip
    with mlflow_run.model_run(params, run_name, tags, run_params(params, spec)) as parent:
        units = [(split, replicate) for replicate in cfg.seeds for split in folds]
        fold_summaries = _train_units(fold_run, units, on_unit)
        reused = sum(1 for f in fold_summaries if f.get("reused"))
        if reused:
            parent.set_tags({"robustmer.reused_units": str(reused)})
        summary = {
            "model": model_name,
            "arch": spec.arch,
            "task": spec.task,
            "classes": data.classes,
            "features": data.feature_names,
            "features_hash": tags["robustmer.features_hash"],
            "selection_metric": cfg.selection_metric,
            "seeds": list(cfg.seeds),
            "device": str(device),
            "mlflow_run_id": parent.run_id,
            "folds": fold_summaries,
        }
        means = {
            f"cv_val_{k}": sum(f["val"][f"val_{k}"] for f in fold_summaries) / len(fold_summaries)
            for k in task_metric_keys(spec.task)
            if all(f"val_{k}" in f["val"] for f in fold_summaries)  # none: label-free stage 1
        }
        parent.log_metrics({**means, "train_seconds": time.perf_counter() - started})
        summary["mlflow_experiment_id"] = parent.client.get_run(parent.run_id).info.experiment_id
        summary_file = building.root / (SUMMARY_FILE if stage == "train" else PRETRAIN_SUMMARY)
        write_json(summary_file, summary)
        parent.log_artifact(summary_file)
        building.swap_in()
        _write_run_record(out_dir, summary, means)
    return out_dir


def _inputs_digest(
    params: Params,
    spec: ModelSpec,
    stage: str,
    tags: Mapping[str, str],
    device: torch.device,
    pretrain_dir: Path | None,
) -> str:
    """What the units of a build depend on: a partial build of other inputs is not resumed."""
    flat = run_params(params, spec)
    flat.pop("train.checkpoint_every_s", None)  # when to save does not change what is learnt
    flat.pop("train.workers", None)  # nor how many units run at once
    stage1 = Path(pretrain_dir or "") / PRETRAIN_SUMMARY
    return inputs_digest(
        {
            "params": flat,
            "stage": stage,
            "features_hash": tags["robustmer.features_hash"],
            "stage1": sha256_file(stage1) if stage == "train" and stage1.is_file() else None,
            "source": source_digest(),
            "torch": torch.__version__,
            "device": str(device),
        }
    )


def _write_run_record(out_dir: Path, summary: dict[str, Any], means: dict[str, float]) -> None:
    """The DVC side of the MLflow link: run and experiment ids (strings show in exp show)."""
    record = {
        "model": summary["model"],
        "mlflow_run_id": summary["mlflow_run_id"],
        "mlflow_experiment_id": summary["mlflow_experiment_id"],
        **means,
    }
    write_json(run_record_path(out_dir), record)


@dataclass
class FoldRun:
    """Trains one (fold, seed) of a stage and returns its summary row."""

    params: Params
    spec: ModelSpec
    cfg: TrainConfig
    data: ModelData
    stage: str
    out_dir: Path
    device: torch.device
    tags: dict[str, str]
    pretrain_dir: Path | None = None
    building: Building | None = None

    def __call__(self, split: FoldSplit, replicate: int) -> dict[str, Any]:
        return _train_fold(self, split, replicate)


@dataclass
class FoldJob:
    """The `FoldContext` (models/method.py) of one (fold, seed): what a recipe trains with."""

    run: FoldRun
    split: FoldSplit
    replicate: int
    seed: int
    tensors: FoldTensors
    mlrun: mlflow_run.RunHandle
    fits: int = field(default=0)  # calls of `fit` so far: the index of resume states

    @property
    def spec(self) -> ModelSpec:
        return self.run.spec

    @property
    def cfg(self) -> TrainConfig:
        return self.run.cfg

    @property
    def data(self) -> ModelData:
        return self.run.data

    @property
    def stage(self) -> str:
        return self.run.stage

    @property
    def device(self) -> torch.device:
        return self.run.device

    def build(self) -> torch.nn.Module:
        return build_model(self.spec, self.data.input_dims, len(self.data.classes),
                           self.data.levels, self.data.part_dims)  # fmt: skip

    def fit(
        self,
        model: torch.nn.Module,
        *,
        objective: Objective | None = None,
        corruption: TrainingCorruption | None = None,
        val_present: dict[str, np.ndarray] | None = None,
        train: np.ndarray | None = None,
        tensors: FoldTensors | None = None,
        cfg: TrainConfig | None = None,
        tag: str = "",
        keep: str = "best",
        streams: Sequence[Stream] = (),
    ) -> FitResult:
        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            self.mlrun.log_epoch(epoch, {f"{tag}{k}": v for k, v in metrics.items()})

        cfg = self.cfg if cfg is None else cfg
        checkpoints = None
        if self.run.building is not None:
            checkpoints = self.run.building.fit_checkpoints(
                self.split.fold, self.replicate, self.fits, cfg.checkpoint_every_s
            )
        self.fits += 1
        job = FitJob(
            model=model,
            tensors=self.tensors if tensors is None else tensors,
            train=self.split.train if train is None else train,
            val=self.split.val,
            cfg=cfg,
            n_classes=len(self.data.classes),
            seed=self.seed,
            on_epoch=on_epoch,
            corruption=corruption,
            objective=objective,
            val_present=val_present,
            keep=keep,
            checkpoints=checkpoints,
            streams=streams,
        )
        done = checkpoints.load_done() if checkpoints is not None else None
        if done is not None:  # finished before an interruption: replay it
            model.to(self.device)
            model.load_state_dict(done["state_dict"])
            restore_random_states(done["random"], fit_streams(job), self.device)
            for row in done["history"]:
                on_epoch(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})
            return FitResult(done["best_epoch"], done["best_metrics"], done["epochs_run"],
                             done["state_dict"], done["history"], done["extra"])  # fmt: skip
        result = fit(job)
        if checkpoints is not None:
            checkpoints.save_done({
                **asdict(result),
                "random": random_states(fit_streams(job), self.device),
            })  # fmt: skip
        return result

    def predict(self, model: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
        batch = self.cfg.batch_size
        return predict_logits(model, self.tensors, rows, batch, seed=self.seed).cpu().numpy()

    def training_corruption(self) -> TrainingCorruption | None:
        return TrainingCorruption.from_spec(self.spec, self.data.modalities, self.seed)

    def stage1_state(self) -> dict[str, torch.Tensor]:
        if self.run.pretrain_dir is None:
            raise DataError(f"{self.spec.name}: {self.spec.arch} needs its pretraining folder")
        path = checkpoint_path(self.run.pretrain_dir, self.split.fold, self.replicate)
        if not path.is_file():
            ds = dataset_of(path) or "<dataset>"
            raise DataError(
                f"{path}: stage-1 checkpoint not found; run `robustmer pretrain "
                f"{self.spec.name} --dataset {ds}` (or `dvc repro pretrain@{ds}-{self.spec.name}`) "
                "first"
            )
        return load_checkpoint(path, self.spec.name)["state_dict"]

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlrun.log_metrics(metrics, step)


def _kept_unit(run: FoldRun, split: FoldSplit, replicate: int) -> dict[str, Any] | None:
    """The row of a unit an interrupted run of the same inputs finished, if any."""
    done = run.building.done_unit(split.fold, replicate) if run.building is not None else None
    if done is None or not (run.out_dir / done["checkpoint"]).is_file():
        return None
    log.info("%s seed %s fold %s: kept from the interrupted run", run.spec.name, replicate,
             split.fold)  # fmt: skip
    return {**done, "reused": True}


def _fold_run_args(
    run: FoldRun, split: FoldSplit, replicate: int
) -> tuple[str, dict[str, str], dict[str, str]]:
    """Name, tags and params of a unit's MLflow run."""
    seed = fold_seed(run.params, run.spec.name, split.fold, replicate, run.stage)
    fold_params = {
        "fold": str(split.fold),
        "train_seed": str(replicate),
        "fold_seed": str(seed),
        "n_train": str(len(split.train)),
        "n_val": str(len(split.val)),
        "n_test": str(len(split.test)),
        "val_speakers": ",".join(split.val_speakers),
        "test_speakers": ",".join(split.test_speakers),
    }
    fold_tags = {**run.tags, "robustmer.fold": str(split.fold),
                 "robustmer.train_seed": str(replicate)}  # fmt: skip
    return f"seed_{replicate}_fold_{split.fold}", fold_tags, fold_params


def _train_fold(run: FoldRun, split: FoldSplit, replicate: int) -> dict[str, Any]:
    kept = _kept_unit(run, split, replicate)
    if kept is not None:
        return kept
    with mlflow_run.fold_run(*_fold_run_args(run, split, replicate)) as mlrun:
        row = _fit_unit(run, split, replicate, mlrun)
    row["mlflow_run_id"] = mlrun.run_id
    if run.building is not None:
        run.building.finish_unit(split.fold, replicate, row)
    return row


def _fit_unit(
    run: FoldRun, split: FoldSplit, replicate: int, mlrun: mlflow_run.RunHandle
) -> dict[str, Any]:
    """Train one (fold, seed), save its checkpoint; its summary row (run id left to the caller)."""
    params, spec, cfg, data, out_dir = run.params, run.spec, run.cfg, run.data, run.out_dir
    seed = fold_seed(params, spec.name, split.fold, replicate, run.stage)
    started = time.perf_counter()
    seed_everything(seed)
    normaliser = Normaliser.fit(data, split.train)
    tensors = FoldTensors(data, normaliser, run.device)
    job = FoldJob(run, split, replicate, seed, tensors, mlrun)
    recipe = method(spec.arch).recipe
    result = recipe.pretrain(job) if run.stage == "pretrain" else recipe.train(job)
    meta = {
        "model": spec.name,
        "spec": asdict(spec),
        "classes": data.classes,
        "input_dims": data.input_dims,
        "levels": data.levels,
        "features": data.feature_names,
        "fold": split.fold,
        "train_seed": replicate,
        "stage": run.stage,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val_speakers": split.val_speakers,
        "test_speakers": split.test_speakers,
        "norm_eps": NORM_EPS,
        "seed": seed,
    }
    path = checkpoint_path(out_dir, split.fold, replicate)
    save_checkpoint(path, result.state_dict, normaliser.state(), meta)
    checkpoint_sha256 = sha256_file(path)
    mlrun.set_tags({"robustmer.checkpoint_sha256": checkpoint_sha256})
    mlrun.log_metrics(
        {
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            **{f"best_{k}": v for k, v in result.best_metrics.items()},
        }
    )
    seconds = time.perf_counter() - started
    first = result.epochs_run - cfg.average_last + 1
    kept = (f"mean weights of epochs {max(first, 1)}-{result.epochs_run}" if cfg.average_last
            else f"best epoch {result.best_epoch} of {result.epochs_run}")  # fmt: skip
    log.info(
        "%s seed %s fold %s: %s, val %s %.4f (train %d / val %d / test %d) in %.1fs",
        spec.name, replicate, split.fold, kept, cfg.selection_metric,
        result.best_metrics.get(f"val_{cfg.selection_metric}", float("nan")), len(split.train),
        len(split.val),
        len(split.test), seconds,
    )  # fmt: skip
    return {
        "fold": split.fold,
        "train_seed": replicate,
        "checkpoint": path.relative_to(out_dir).as_posix(),
        "checkpoint_sha256": checkpoint_sha256,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val": result.best_metrics,
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "val_speakers": split.val_speakers,
        "test_speakers": split.test_speakers,
        "seconds": round(seconds, 3),
        "mlflow_run_id": "",
        **({"extra": result.extra} if result.extra else {}),
    }


# The units of one build, set in each worker process before any unit runs (inherited by fork).
_WORKER_UNITS: tuple[FoldRun, list[tuple[FoldSplit, int]]] | None = None


def _set_worker_units(run: FoldRun, units: list[tuple[FoldSplit, int]]) -> None:
    global _WORKER_UNITS
    _WORKER_UNITS = (run, units)
    configure_threads(run.cfg.num_threads, run.device)


def _unit_in_worker(index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train unit `index` in a worker process: its row and what its MLflow run would log."""
    assert _WORKER_UNITS is not None
    run, units = _WORKER_UNITS
    split, replicate = units[index]
    recorded = mlflow_run.RecordedRun()
    row = _fit_unit(run, split, replicate, recorded)  # type: ignore[arg-type]
    return row, recorded.record()


def _train_units(
    run: FoldRun,
    units: list[tuple[FoldSplit, int]],
    on_unit: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """Every unit's row, in unit order: one after the other, or over `train.workers` processes.

    Parallel units give the same checkpoints (each unit is seeded on its own); their MLflow
    fold runs are logged by this process as each unit ends. A search's `on_unit` (which may
    stop the training after any unit) and CUDA keep the units in order in this process.
    Workers x `num_threads` is capped at the usable cores: oversubscribed torch threads spin
    against each other (NMER's 2-thread units, two at a time on 2 cores, trained 2.2x slower).
    """
    workers = unit_workers(run.cfg.workers, run.cfg.num_threads, len(units), run.device,
                           run.spec.name)  # fmt: skip
    if workers <= 1 or on_unit is not None:
        rows = []
        for split, replicate in units:
            rows.append(run(split, replicate))
            if on_unit is not None:
                on_unit(rows[-1])
        return rows
    from concurrent.futures import as_completed

    from robustmer.workers import worker_pool

    rows: list[dict[str, Any] | None] = [_kept_unit(run, s, r) for s, r in units]
    todo = [i for i, row in enumerate(rows) if row is None]
    with worker_pool(workers, _set_worker_units, (run, units)) as pool:
        futures = {pool.submit(_unit_in_worker, i): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            split, replicate = units[i]
            row, record = future.result()
            name, tags, fold_params = _fold_run_args(run, split, replicate)
            row["mlflow_run_id"] = mlflow_run.log_recorded_fold_run(name, tags, fold_params, record)
            if run.building is not None:
                run.building.finish_unit(split.fold, replicate, row)
            rows[i] = row
    return [row for row in rows if row is not None]
