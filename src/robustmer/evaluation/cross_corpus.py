"""`robustmer cross-corpus NAME`: models trained on one dataset, scored on another.

Emotion corpora label different class sets (EmoDB's seven, IEMOCAP's four, ...), so the two
datasets meet in shared classes declared in params (`cross_corpus.label_maps`: per dataset, its
class -> the shared class). A test utterance whose class maps to no shared class is not scored;
a model's probability of a shared class is the sum of its probabilities of the training classes
that map to it (training classes that map to none are ignored), and the prediction is the most
probable shared class. Every fold model of every training seed scores every mapped utterance of
the test dataset (its speakers are all unseen), and fold `ensemble` is the mean of the fold
models' shared-class probabilities: the MERTools rule for a test set outside the folds.

The model must read features of the same extractor on both sides: the test store's feature has
to match the training store's (level, dim, extractor version and options), else the numbers would
compare different inputs. Conditions are the test dataset's (`corrupt.conditions`), generated once
by `robustmer corrupt --dataset <test>`, so a cross-corpus cell is also a robustness cell.

Outputs (`paths.cross_corpus_dir`): `scores.csv` (the tidy columns of `paths.SCORE_COLUMNS` plus
`train_dataset` and `test_dataset`), `predictions.csv`, `summary.md`, and the metrics JSON (a DVC
metric). Scores are logged to an MLflow run `cross-corpus-<name>`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustmer import paths
from robustmer.config import ModelSpec, Params, TrainConfig
from robustmer.corruption.condition_store import ConditionStore
from robustmer.corruption.temporal import drop_frames
from robustmer.data.model_data import FoldTensors, data_folds, load_model_data
from robustmer.data.store import FeatureStore
from robustmer.device import configure_threads, resolve_device
from robustmer.errors import ConfigError, DataError
from robustmer.evaluation.runner import _load_fold, _predict, _read_summary, _with_overlay
from robustmer.io import atomic_dir, write_json, write_text
from robustmer.metrics import classification_metrics, task_metric_keys
from robustmer.models.registry import check_models, method
from robustmer.seeding import derive_seed

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"  # fold of the rows scored by the mean of every fold model
CROSS_COLUMNS = ("train_dataset", "test_dataset", *paths.SCORE_COLUMNS)


def shared_classes(label_maps: dict[str, dict[str, str]], train: str, test: str) -> list[str]:
    """The classes both maps reach, in the order the training map first names them."""
    reached = set(label_maps[test].values())
    shared = [c for c in dict.fromkeys(label_maps[train].values()) if c in reached]
    if not shared:
        raise ConfigError(
            f"cross_corpus.label_maps: {train} and {test} share no class ({train} maps to "
            f"{sorted(set(label_maps[train].values()))}, {test} to {sorted(reached)})"
        )
    return shared


def class_map(
    store_classes: list[str], mapping: dict[str, str], shared: list[str], where: str
) -> np.ndarray:
    """Index of each store class in `shared` (-1: not scored); unknown classes are an error."""
    unknown = sorted(set(mapping) - set(store_classes))
    if unknown:
        raise ConfigError(f"{where}: {unknown} are not classes of the store (its classes: "
                          f"{store_classes}); fix the keys of the map")  # fmt: skip
    index = {name: i for i, name in enumerate(shared)}
    return np.array([index.get(mapping.get(c, ""), -1) for c in store_classes], dtype=np.int64)


def check_same_features(train: FeatureStore, test: FeatureStore, spec: ModelSpec) -> None:
    """The model's features exist in the test store and were made the same way as in training."""
    for name in (n for modality in spec.features for n in spec.store_names(modality)):
        if name not in test.feature_names():
            raise DataError(
                f"{test.root}: no feature {name!r}, which {spec.name!r} reads; add the extractor "
                f"that made it in {train.root} to `extract.{name.split('/')[0]}` and re-run "
                f"extract on {test.dataset}"
            )
        a, b = train.meta(name), test.meta(name)
        made = [(m.level, m.dim, m.version, m.options()) for m in (a, b)]
        if made[0] != made[1]:
            raise DataError(
                f"{name} differs between {train.root} ({a.level}, dim {a.dim}, {a.version}) and "
                f"{test.root} ({b.level}, dim {b.dim}, {b.version}) or in its extractor options; "
                "a cross-corpus model needs the same extractor on both datasets"
            )


def evaluate_cross_corpus(
    train_params: Params, name: str, root: Path = Path(".")
) -> dict[str, Any]:
    """Score `cross_corpus.evaluations.<name>`; `train_params` are loaded for its train dataset
    (its `per_dataset` model keys applied). Writes into `paths.cross_corpus_dir(name)`."""
    check_models(train_params)
    section = train_params["cross_corpus"]
    cell = section["evaluations"][name]
    train, test = cell["train"], cell["test"]
    shared = shared_classes(section["label_maps"], train, test)
    train_store = FeatureStore(root / paths.feature_dir(train))
    test_store = FeatureStore(root / paths.feature_dir(test))
    maps = section["label_maps"]
    where = "cross_corpus.label_maps"
    train_to_shared = class_map(train_store.classes, maps[train], shared, f"{where}.{train}")
    test_to_shared = class_map(test_store.classes, maps[test], shared, f"{where}.{test}")
    scores: list[dict[str, Any]] = []
    predictions: list[pd.DataFrame] = []
    skipped: dict[str, str] = {}
    for model_name in cell["models"]:
        spec = ModelSpec.from_params(train_params, model_name)
        if spec.task != "classification":
            raise ConfigError(f"cross_corpus.evaluations.{name}: {model_name!r} has task "
                              f"{spec.task}; cross-corpus scoring maps classes")  # fmt: skip
        model_dir = root / paths.model_dir(train, model_name)
        summary = _read_summary(model_dir, model_name)
        if summary.get("skipped"):
            skipped[model_name] = str(summary["skipped"])
            log.warning("skipped cross-corpus %s %s: %s", name, model_name, summary["skipped"])
            continue
        check_same_features(train_store, test_store, spec)
        for condition in cell["conditions"]:
            cond = ConditionStore(root / paths.corrupted_dir(test, condition))
            cond.check_store(test_store)
            if cond.info.get("skipped"):
                skipped[f"{model_name}/{condition}"] = str(cond.info["skipped"])
                continue
            rows, preds = _score_model(train_params, spec, model_dir, train_store, test_store,
                                       cond, train_to_shared, test_to_shared, shared)  # fmt: skip
            scores += [{"train_dataset": train, "test_dataset": test, **r} for r in rows]
            predictions.append(preds)
    table = pd.DataFrame(scores, columns=list(CROSS_COLUMNS))
    metrics = summarise(table, name, train, test, shared, skipped)
    out = root / paths.cross_corpus_dir(name)
    _write(out, table, predictions, metrics, root / paths.cross_corpus_metrics(name))
    _track(train_params, name, metrics, [out / "scores.csv", out / "summary.md"])
    return metrics


def _score_model(
    params: Params,
    spec: ModelSpec,
    model_dir: Path,
    train_store: FeatureStore,
    test_store: FeatureStore,
    cond: ConditionStore,
    train_to_shared: np.ndarray,
    test_to_shared: np.ndarray,
    shared: list[str],
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every fold model of every seed on every level of `cond`; rows and predictions."""
    cfg = TrainConfig.from_params(params, spec)
    frame_inputs = method(spec.arch).frame_inputs
    train_data = load_model_data(train_store, spec, frame_inputs=frame_inputs)
    folds = data_folds(train_data, cfg.val_speakers, cfg.seed)
    test_data = load_model_data(test_store, spec, frame_inputs=frame_inputs)
    device = resolve_device(cfg.device)
    configure_threads(cfg.num_threads, device)
    # The shared-class label of each test utterance (-1: unlabelled or not mapped).
    labels = np.where(test_data.labels >= 0, test_to_shared[np.maximum(test_data.labels, 0)], -1)
    merge = torch.zeros(len(train_to_shared), len(shared), dtype=torch.float64)
    for i, j in enumerate(train_to_shared):
        if j >= 0:
            merge[i, j] = 1.0
    rows: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    for level in cond.levels:
        records = cond.level_records(level)
        records = records[labels[records["sample_index"].to_numpy()] >= 0].reset_index(drop=True)
        if records.empty:
            raise DataError(f"{test_store.root}: no labelled utterance of a shared class "
                            f"{shared}; check cross_corpus.label_maps")  # fmt: skip
        level_data = _with_overlay(test_data, cond.overlay(level), spec, frame_inputs)
        if cond.kind == "temporal_drop":
            level_data = drop_frames(level_data, test_store, spec.features, frame_inputs,
                                     cond.level_records(level), cond.info["settings"])  # fmt: skip
        level_value = float(records["level_value"].iloc[0])
        truth = labels[records["sample_index"].to_numpy()]
        for seed in cfg.seeds:
            total = np.zeros((len(records), len(shared)))
            for split in folds:
                model, normaliser = _load_fold(model_dir, spec, train_data, split, seed)
                tensors = FoldTensors(level_data, normaliser, device)
                raw = _predict(model.to(device), tensors, records,
                               derive_seed(cfg.seed, "cross-corpus", seed, split.fold))  # fmt: skip
                probs = torch.softmax(torch.from_numpy(raw).double(), 1) @ merge
                total += probs.numpy()
                rows += _rows(spec.name, cond.name, level, level_value, split.fold, seed,
                              truth, probs.numpy(), len(shared))  # fmt: skip
            mean = total / len(folds)
            rows += _rows(spec.name, cond.name, level, level_value, ENSEMBLE, seed, truth, mean,
                          len(shared))  # fmt: skip
            preds.append(pd.DataFrame({
                "model": spec.name, "condition": cond.name, "level": level, "seed": seed,
                "sample_id": records["sample_id"].to_numpy(),
                "actual": np.asarray(shared)[truth],
                "predicted": np.asarray(shared)[mean.argmax(1)],
                **{f"prob_{c}": np.round(mean[:, i], 6) for i, c in enumerate(shared)},
            }))  # fmt: skip
    return rows, pd.concat(preds, ignore_index=True)


def _rows(
    model: str, condition: str, level: str, level_value: float, fold: int | str, seed: int,
    truth: np.ndarray, probs: np.ndarray, n_classes: int,
) -> list[dict[str, Any]]:  # fmt: skip
    metrics = classification_metrics(truth, probs.argmax(1), n_classes)
    return [
        {"model": model, "condition": condition, "level": level, "level_value": level_value,
         "fold": str(fold), "seed": seed, "metric": key, "value": metrics[key]}
        for key in task_metric_keys("classification")
    ]  # fmt: skip


def summarise(
    table: pd.DataFrame, name: str, train: str, test: str, shared: list[str],
    skipped: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Per model, condition and level: the ensemble's score (mean ± std over seeds) and the
    single fold models' (mean ± std over folds and seeds)."""
    models: dict[str, Any] = {}
    for (model, condition, level), part in table.groupby(["model", "condition", "level"],
                                                         sort=False):  # fmt: skip
        entry: dict[str, float] = {}
        for key, rows in part.groupby("metric", sort=False):
            ensemble = rows[rows["fold"] == ENSEMBLE]["value"]
            single = rows[rows["fold"] != ENSEMBLE]["value"]
            entry[str(key)] = float(ensemble.mean())
            entry[f"{key}_std"] = float(ensemble.std(ddof=0))
            entry[f"{key}_fold_mean"] = float(single.mean())
            entry[f"{key}_fold_std"] = float(single.std(ddof=0))
        models.setdefault(str(model), {}).setdefault(str(condition), {})[str(level)] = entry
    return {"name": name, "train_dataset": train, "test_dataset": test,
            "shared_classes": shared, "models": models, "skipped": skipped}  # fmt: skip


def markdown(metrics: dict[str, Any], n_scored: int) -> str:
    train, test = metrics["train_dataset"], metrics["test_dataset"]
    lines = [
        f"# Cross-corpus: trained on `{train}`, tested on `{test}`",
        "",
        f"Shared classes: {', '.join(metrics['shared_classes'])} ({n_scored} test utterances of "
        f"those classes; chance UA {1 / len(metrics['shared_classes']):.3f}). UA: the ensemble "
        "of the fold models (mean of their shared-class probabilities), mean ± std over seeds; "
        "fold-model UA: each fold model alone, mean ± std over folds and seeds.",
        "",
        "| model | condition | level | UA (ensemble) | WA (ensemble) | fold-model UA |",
        "|---|---|---|---|---|---|",
    ]
    for model, conditions in metrics["models"].items():
        for condition, levels in conditions.items():
            for level, m in levels.items():
                lines.append(
                    f"| {model} | {condition} | {level} | {m['ua']:.3f} ± {m['ua_std']:.3f} | "
                    f"{m['wa']:.3f} ± {m['wa_std']:.3f} | "
                    f"{m['ua_fold_mean']:.3f} ± {m['ua_fold_std']:.3f} |"
                )
    if metrics["skipped"]:
        lines += ["", "## Not scored", ""]
        lines += [f"- {what}: {why}" for what, why in metrics["skipped"].items()]
    return "\n".join(lines) + "\n"


def _write(
    out: Path, table: pd.DataFrame, predictions: list[pd.DataFrame], metrics: dict[str, Any],
    metrics_path: Path,
) -> None:  # fmt: skip
    """Build the folder aside and swap it in, then the metric beside it."""
    preds = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    n_scored = int(preds["sample_id"].nunique()) if len(preds) else 0
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / "scores.csv", index=False, float_format="%.6g")
        preds.to_csv(tmp / "predictions.csv", index=False, float_format="%.6g")
        write_text(tmp / "summary.md", markdown(metrics, n_scored))
    write_json(metrics_path, metrics)


def _track(params: Params, name: str, metrics: dict[str, Any], files: list[Path]) -> None:
    from robustmer.tracking import mlflow_run
    from robustmer.tracking.lineage import git_tags

    tags = {"robustmer.stage": "cross-corpus", "robustmer.cross_corpus": name, **git_tags()}
    # MLflow metric keys allow letters, digits, _ - . / and spaces only.
    flat = {
        re.sub(r"[^A-Za-z0-9_./ -]", "_", f"cross/{model}/{condition}/{level}/{key}"): value
        for model, conditions in metrics["models"].items()
        for condition, levels in conditions.items()
        for level, entry in levels.items()
        for key, value in entry.items()
        if np.isfinite(value)
    }
    run_params = {"train_dataset": metrics["train_dataset"],
                  "test_dataset": metrics["test_dataset"],
                  "shared_classes": ",".join(metrics["shared_classes"])}  # fmt: skip
    with mlflow_run.model_run(params, f"cross-corpus-{name}", tags, run_params) as run:
        run.log_metrics(flat)
        for path in files:
            run.log_artifact(path, "cross_corpus")
