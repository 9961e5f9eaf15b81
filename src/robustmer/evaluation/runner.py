"""`robustmer evaluate <model>`: predict every fold's held-out speakers with that fold's model.

Each sample lies in exactly one test fold, so the pooled predictions cover the dataset once.
Outputs: the metrics JSON (a DVC metric: pooled, per fold, fold mean and std), the predictions
CSV (one row per sample with class probabilities; DVC's confusion template reads it), the
confusion PNG and a confusion CSV beside it; all are also logged to the training MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.config import ModelSpec, Params, TrainConfig
from robustmer.data.store import FeatureStore
from robustmer.errors import DataError
from robustmer.evaluation.metrics import (
    METRIC_KEYS,
    classification_metrics,
    confusion_matrix,
    mean_std,
)
from robustmer.evaluation.plots import plot_confusion
from robustmer.io import atomic_path, read_json, write_json
from robustmer.models.registry import architecture, build_model
from robustmer.tracking import mlflow_run
from robustmer.tracking.lineage import git_tags
from robustmer.training.checkpoint import checkpoint_path, load_checkpoint
from robustmer.training.data import (
    FoldTensors,
    ModelData,
    Normaliser,
    load_model_data,
    speaker_folds,
)
from robustmer.training.loop import configure_threads, predict_proba, resolve_device
from robustmer.training.runner import SUMMARY_FILE

log = logging.getLogger(__name__)

_SPEC_KEYS = ("arch", "features", "hidden_dim", "dropout", "num_layers")


def evaluate_model(
    params: Params,
    model_name: str,
    store_dir: Path,
    model_dir: Path,
    metrics_path: Path,
    predictions_path: Path,
    confusion_path: Path,
) -> dict[str, Any]:
    """Evaluate all folds of `model_name`; return the metrics written to `metrics_path`."""
    spec = ModelSpec.from_params(params, model_name)
    cfg = TrainConfig.from_params(params)
    model_dir = Path(model_dir)
    summary = _read_summary(model_dir, model_name)
    store = FeatureStore(store_dir)
    data = load_model_data(store, spec, frame_inputs=architecture(spec.arch).frame_inputs)
    folds = speaker_folds(data.manifest, cfg.val_speakers, cfg.seed)
    device = resolve_device(cfg.device)
    configure_threads(cfg, device)

    n_classes = len(data.classes)
    probs = np.full((len(data), n_classes), np.nan, dtype=np.float64)
    per_fold: dict[str, dict[str, float]] = {}
    for split in folds:
        path = checkpoint_path(model_dir, split.fold)
        checkpoint = load_checkpoint(path, model_name)
        _check_compatible(checkpoint["meta"], spec, data, split.test_speakers, path)
        model = build_model(spec, data.input_dims, n_classes, data.levels)
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as exc:
            raise DataError(
                f"{path}: weights do not fit model {model_name!r} ({exc}); "
                f"run `robustmer train {model_name}`"
            ) from exc
        tensors = FoldTensors(data, Normaliser.from_state(checkpoint["normaliser"]), device)
        fold_probs = predict_proba(model.to(device), tensors, split.test)
        if not np.isnan(probs[split.test]).all():
            raise DataError(f"fold {split.fold}: test samples already predicted by another fold")
        probs[split.test] = fold_probs
        per_fold[str(split.fold)] = classification_metrics(
            data.labels[split.test], fold_probs.argmax(1), n_classes
        )
    if np.isnan(probs).any():
        missing = data.manifest["sample_id"].iloc[int(np.flatnonzero(np.isnan(probs[:, 0]))[0])]
        raise DataError(f"sample {missing!r} is in no test fold; check the manifest `fold` column")

    predicted = probs.argmax(1)
    pooled = classification_metrics(data.labels, predicted, n_classes)
    fold_mean, fold_std = mean_std(list(per_fold.values()))
    metrics: dict[str, Any] = {
        "model": model_name,
        **pooled,
        "n_folds": len(per_fold),
        "per_fold": per_fold,
        "fold_mean": fold_mean,
        "fold_std": fold_std,
    }
    cm = confusion_matrix(data.labels, predicted, n_classes)
    write_json(metrics_path, metrics)
    _write_predictions(predictions_path, data, probs, predicted)
    confusion_csv = Path(confusion_path).with_suffix(".csv")
    _write_confusion_csv(confusion_csv, cm, data.classes)
    plot_confusion(
        cm, data.classes, Path(confusion_path),
        title=f"{model_name}: WA {pooled['wa']:.3f}  UA {pooled['ua']:.3f}",
    )  # fmt: skip
    _track(params, model_name, summary, metrics, per_fold,
           [metrics_path, predictions_path, confusion_path, confusion_csv])  # fmt: skip
    log.info(
        "%s: WA %.4f UA %.4f WF1 %.4f MF1 %.4f over %d samples (%d folds)",
        model_name, pooled["wa"], pooled["ua"], pooled["weighted_f1"], pooled["macro_f1"],
        pooled["n_samples"], len(per_fold),
    )  # fmt: skip
    return metrics


def _read_summary(model_dir: Path, model_name: str) -> dict[str, Any]:
    path = model_dir / SUMMARY_FILE
    try:
        return read_json(path)
    except FileNotFoundError as exc:
        raise DataError(
            f"{path}: not found, so {model_name!r} was not trained; "
            f"run `robustmer train {model_name}`"
        ) from exc
    except ValueError as exc:
        raise DataError(f"{path}: corrupt ({exc}); run `robustmer train {model_name}`") from exc


def _check_compatible(
    meta: dict[str, Any],
    spec: ModelSpec,
    data: ModelData,
    test_speakers: list[str],
    path: Path,
) -> None:
    """The checkpoint must match today's params, store classes and fold; else retrain."""
    problems = [
        f"{key} {meta.get('spec', {}).get(key)!r} != {getattr(spec, key)!r}"
        for key in _SPEC_KEYS
        if meta.get("spec", {}).get(key) != getattr(spec, key)
    ]
    if meta.get("classes") != data.classes:
        problems.append(f"classes {meta.get('classes')} != store classes {data.classes}")
    if meta.get("input_dims") != data.input_dims:
        problems.append(f"input dims {meta.get('input_dims')} != store {data.input_dims}")
    if meta.get("test_speakers") != test_speakers:
        problems.append("its test speakers differ from this fold's (the folds changed)")
    if problems:
        raise DataError(
            f"{path}: checkpoint does not match the current params/data: "
            + "; ".join(problems)
            + f". Run `robustmer train {spec.name}` to retrain."
        )


def _write_predictions(
    path: Path, data: ModelData, probs: np.ndarray, predicted: np.ndarray
) -> None:
    classes = np.asarray(data.classes)
    frame = pd.DataFrame(
        {
            "sample_id": data.manifest["sample_id"].to_numpy(),
            "speaker": data.manifest["speaker"].to_numpy(),
            "fold": data.manifest["fold"].to_numpy(),
            "actual": classes[data.labels],
            "predicted": classes[predicted],
        }
    )
    for i, name in enumerate(data.classes):
        frame[f"prob_{name}"] = np.round(probs[:, i], 6)
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def _write_confusion_csv(path: Path, cm: np.ndarray, classes: list[str]) -> None:
    frame = pd.DataFrame(cm, index=pd.Index(classes, name="actual"), columns=classes)
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp)


def _track(
    params: Params,
    model_name: str,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    per_fold: dict[str, dict[str, float]],
    artifacts: list[Path],
) -> None:
    """Add test metrics and files to the parent run of training, per-fold ones to its folds."""
    flat = {f"test_{k}": metrics[k] for k in METRIC_KEYS}
    flat |= {f"test_{k}_fold_mean": metrics["fold_mean"][k] for k in METRIC_KEYS}
    flat |= {f"test_{k}_fold_std": metrics["fold_std"][k] for k in METRIC_KEYS}
    tags = {
        "robustmer.model": model_name,
        "robustmer.stage": "evaluate",
        **{k.replace("robustmer.", "robustmer.eval_"): v for k, v in git_tags().items()
           if k.startswith("robustmer.")},
    }  # fmt: skip
    with mlflow_run.resume_run(
        params, summary.get("mlflow_run_id"), f"{model_name}-evaluate", tags
    ) as run:
        run.log_metrics(flat)
        for path in artifacts:
            run.log_artifact(Path(path), "evaluation")
    for fold in summary.get("folds", []):
        run_id, key = fold.get("mlflow_run_id"), str(fold.get("fold"))
        if run_id and key in per_fold:
            mlflow_run.log_to_run(params, run_id, {f"test_{k}": per_fold[key][k]
                                                   for k in METRIC_KEYS})  # fmt: skip
