"""`robustmer train <model>`: speaker-independent cross-validation of one model from params.yaml.

Per training seed (`train.seeds`) and fold: fit the normaliser on the training speakers, train
with early stopping on the validation speakers, save `seed_<s>/fold_<k>.pt`. The folder also
gets `train_summary.json` (best epochs, validation metrics, set sizes, MLflow run ids), which
`robustmer evaluate` reads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from robustmer.config import ModelSpec, Params, TrainConfig
from robustmer.corruption.training import TrainingCorruption
from robustmer.data.store import FeatureStore
from robustmer.evaluation.metrics import METRIC_KEYS
from robustmer.io import write_json
from robustmer.models.registry import architecture, build_model
from robustmer.seeding import derive_seed, seed_everything
from robustmer.tracking import mlflow_run
from robustmer.tracking.lineage import lineage_tags
from robustmer.training.checkpoint import checkpoint_path, save_checkpoint
from robustmer.training.data import (
    NORM_EPS,
    FoldSplit,
    FoldTensors,
    ModelData,
    Normaliser,
    load_model_data,
    speaker_folds,
)
from robustmer.training.loop import configure_threads, fit, resolve_device

log = logging.getLogger(__name__)

SUMMARY_FILE = "train_summary.json"


def fold_seed(params: Params, model_name: str, fold: int, replicate: int) -> int:
    """The torch/shuffle seed of one (model, fold, training seed) run."""
    return derive_seed(params["seed"], "train", model_name, fold, replicate)


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


def train_model(params: Params, model_name: str, store_dir: Path, out_dir: Path) -> Path:
    """Train every fold of `model_name`; return `out_dir` with the checkpoints and summary."""
    spec = ModelSpec.from_params(params, model_name)
    cfg = TrainConfig.from_params(params)
    arch = architecture(spec.arch)
    store = FeatureStore(store_dir)
    data = load_model_data(store, spec, frame_inputs=arch.frame_inputs)
    folds = speaker_folds(data.manifest, cfg.val_speakers, cfg.seed)
    device = resolve_device(cfg.device)
    configure_threads(cfg, device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("fold_*.pt"), *out_dir.glob("seed_*/fold_*.pt")]:
        stale.unlink()

    tags = {
        **lineage_tags(params, store, data.feature_names),
        "robustmer.model": model_name,
        "robustmer.arch": spec.arch,
        "robustmer.stage": "train",
    }
    started = time.perf_counter()
    with mlflow_run.model_run(params, model_name, tags, run_params(params, spec)) as parent:
        fold_summaries = [
            _train_fold(params, spec, cfg, data, split, replicate, out_dir, device, tags)
            for replicate in cfg.seeds
            for split in folds
        ]
        summary = {
            "model": model_name,
            "arch": spec.arch,
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
            for k in METRIC_KEYS
        }
        parent.log_metrics({**means, "train_seconds": time.perf_counter() - started})
        write_json(out_dir / SUMMARY_FILE, summary)
        parent.log_artifact(out_dir / SUMMARY_FILE)
    return out_dir


def _train_fold(
    params: Params,
    spec: ModelSpec,
    cfg: TrainConfig,
    data: ModelData,
    split: FoldSplit,
    replicate: int,
    out_dir: Path,
    device: torch.device,
    tags: dict[str, str],
) -> dict[str, Any]:
    seed = fold_seed(params, spec.name, split.fold, replicate)
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
    fold_tags = {**tags, "robustmer.fold": str(split.fold), "robustmer.train_seed": str(replicate)}
    started = time.perf_counter()
    run_name = f"seed_{replicate}_fold_{split.fold}"
    with mlflow_run.fold_run(run_name, fold_tags, fold_params) as run:
        seed_everything(seed)
        normaliser = Normaliser.fit(data, split.train)
        tensors = FoldTensors(data, normaliser, device)
        model = build_model(spec, data.input_dims, len(data.classes), data.levels)
        corruption = TrainingCorruption.from_spec(spec, data.modalities, seed)
        result = fit(
            model, tensors, split.train, split.val, cfg, len(data.classes), seed, run.log_epoch,
            corruption,
        )  # fmt: skip
        meta = {
            "model": spec.name,
            "spec": asdict(spec),
            "classes": data.classes,
            "input_dims": data.input_dims,
            "levels": data.levels,
            "features": data.feature_names,
            "fold": split.fold,
            "train_seed": replicate,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "val_speakers": split.val_speakers,
            "test_speakers": split.test_speakers,
            "norm_eps": NORM_EPS,
            "seed": seed,
        }
        path = checkpoint_path(out_dir, split.fold, replicate)
        save_checkpoint(path, result.state_dict, normaliser.state(), meta)
        run.log_metrics(
            {
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                **{f"best_{k}": v for k, v in result.best_metrics.items()},
            }
        )
    seconds = time.perf_counter() - started
    log.info(
        "%s seed %s fold %s: best epoch %d of %d, val %s %.4f (train %d / val %d / test %d) "
        "in %.1fs",
        spec.name, replicate, split.fold, result.best_epoch, result.epochs_run,
        cfg.selection_metric,
        result.best_metrics[f"val_{cfg.selection_metric}"], len(split.train), len(split.val),
        len(split.test), seconds,
    )  # fmt: skip
    return {
        "fold": split.fold,
        "train_seed": replicate,
        "checkpoint": path.relative_to(out_dir).as_posix(),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val": result.best_metrics,
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "val_speakers": split.val_speakers,
        "test_speakers": split.test_speakers,
        "seconds": round(seconds, 3),
        "mlflow_run_id": run.run_id,
    }
