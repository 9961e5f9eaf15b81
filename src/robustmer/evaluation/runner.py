"""`robustmer evaluate <model> <condition>`: one cell of the robustness grid.

Every trained fold model (per training seed) predicts its held-out speakers under every level of
the condition, reading the condition's stored records, so every model sees identical masks and
noise. Feature noise is applied in the model's normalised input space (its fold's training
statistics); raw-media levels swap in the re-extracted features before normalisation; missing
modalities reach the model through `models.missing.forward`.

Outputs: the tidy scores CSV (model, condition, level, level_value, fold, seed, metric, value;
fold `all` = pooled over the folds), the metrics JSON (a DVC metric: per level, mean ± std over
seeds of the pooled score and over (fold, seed) pairs), the predictions CSV, and the confusion
matrix (PNG + CSV) of the first level; the level scores are also logged to the training MLflow run.

A `task: regression` model is scored with `regression_metrics` (keys `task_metric_keys`), its
predictions CSV holds the actual and predicted values, and its confusion matrix is over the
Acc-7 classes (both sides clipped to [-3, 3] and rounded).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustmer import MODALITIES
from robustmer.config import ModelSpec, Params, TrainConfig, require_tuned
from robustmer.corruption.condition_store import ConditionStore
from robustmer.corruption.feature_noise import noise_sample, schedule
from robustmer.corruption.temporal import drop_frames
from robustmer.data.model_data import (
    FoldSplit,
    FoldTensors,
    ModelData,
    Normaliser,
    data_folds,
    iterate_batches,
    load_model_data,
    official_test,
)
from robustmer.data.store import FeatureStore
from robustmer.device import configure_threads, resolve_device, unit_workers
from robustmer.errors import DataError
from robustmer.evaluation.partial import PredictionCache, partial_dir
from robustmer.evaluation.plots import plot_confusion
from robustmer.evaluation.skipped_cell import write_skipped_cell
from robustmer.gate_status import gate_tags
from robustmer.io import atomic_path, read_json, sha256_file, write_json
from robustmer.metrics import (
    REPORT_DEFAULTS,
    classification_metrics,
    confusion_matrix,
    regression_metrics,
    rounded_scores,
    task_metric_keys,
    valence_metrics,
)
from robustmer.models.method import n_outputs
from robustmer.models.missing import forward
from robustmer.models.registry import build_model, check_models, method
from robustmer.paths import (
    NOT_FOLD_ROWS,
    OFFICIAL_TEST_FOLD,
    POOLED_FOLD,
    SCORE_COLUMNS,
    SUMMARY_FILE,
)
from robustmer.seeding import derive_seed
from robustmer.tracking import mlflow_run
from robustmer.tracking.lineage import git_tags
from robustmer.training.checkpoint import checkpoint_path, load_checkpoint

log = logging.getLogger(__name__)

_SPEC_KEYS = (
    "arch", "features", "hidden_dim", "dropout", "num_layers", "train_corruption", "options",
    "task",
)  # fmt: skip
# Spec keys added after checkpoints were first written: their value when a checkpoint lacks them.
_SPEC_DEFAULTS = {"task": "classification"}
SENTIMENT_CLASSES = [str(v) for v in range(-3, 4)]  # Acc-7 classes of a regression confusion
EVAL_BATCH = 256
ENSEMBLE_FOLD = -1  # predictions CSV `fold` of an official test row: the mean of every fold model


def evaluate_model(
    params: Params,
    model_name: str,
    condition: str,
    store_dir: Path,
    model_dir: Path,
    condition_dir: Path,
    out: dict[str, Path],
) -> dict[str, Any]:
    """Score `model_name` on every level of `condition`; write the files named in `out`.

    `out` keys: metrics, scores, predictions, confusion_png, confusion_csv.
    """
    check_models(params)
    spec = ModelSpec.from_params(params, model_name)
    cfg = TrainConfig.from_params(params, spec)
    summary = _read_summary(Path(model_dir), model_name)
    if not summary.get("skipped"):
        require_tuned(params, model_name)
    store = FeatureStore(store_dir)
    cond = ConditionStore(condition_dir)
    cond.check_store(store)
    reason = summary.get("skipped") or cond.info.get("skipped")
    if reason:
        return write_skipped_cell(model_name, cond.name, str(reason), out)
    frame_inputs = method(spec.arch).frame_inputs
    data = load_model_data(store, spec, frame_inputs=frame_inputs)
    folds = data_folds(data, cfg.val_speakers, cfg.seed)
    device = resolve_device(cfg.device)
    configure_threads(cfg.num_threads, device)

    keys = task_metric_keys(data.task)
    n_out = n_outputs(spec.task, len(data.classes))
    scores: list[dict[str, Any]] = []
    predictions: list[pd.DataFrame] = []
    first_cm: tuple[np.ndarray, list[str]] | None = None
    # Only rows some fold tests are scored: official splits test one part, and an unlabelled
    # pool is never tested. An official test set outside the CV is predicted by every fold model
    # (the mean of their outputs); its labelled rows are scored as fold "test".
    tested = np.concatenate([split.test for split in folds])
    official = official_test(data)
    cache = PredictionCache(
        partial_dir(Path(out["scores"])),
        {
            "summary": sha256_file(Path(model_dir) / SUMMARY_FILE),
            "condition": cond.info,
            "params": mlflow_run.flatten_params({"model": asdict(spec), "seed": params["seed"],
                                                 "device": str(device)}),
        },
        cfg.checkpoint_every_s,
    )  # fmt: skip
    # Each fold model is loaded once per cell and scores every level (prediction is stateless:
    # eval mode, and stochastic models draw from the seed passed with each call).
    loaded: dict[tuple[int, int], tuple[torch.nn.Module, Normaliser]] = {}

    def level_inputs(level: str) -> _Level:
        all_records = cond.level_records(level)
        at = all_records["sample_index"].to_numpy()
        level_data = _with_overlay(data, cond.overlay(level), spec, frame_inputs)
        if cond.kind == "temporal_drop":
            level_data = drop_frames(level_data, store, spec.features, frame_inputs, all_records,
                                     cond.info["settings"])  # fmt: skip
        return _Level(
            records=all_records[np.isin(at, tested)].reset_index(drop=True),
            test_records=all_records[np.isin(at, official)].reset_index(drop=True),
            data=level_data,
            value=float(all_records["level_value"].iloc[0]),
            key=re.sub(r"[^A-Za-z0-9._-]", "_", level),  # a file name in the cache
        )

    def fold_model(seed: int, split: FoldSplit) -> tuple[torch.nn.Module, Normaliser]:
        if (seed, split.fold) not in loaded:
            model, normaliser = _load_fold(model_dir, spec, data, split, seed)
            loaded[seed, split.fold] = (model.to(device), normaliser)
        return loaded[seed, split.fold]

    def fold_calls(lv: _Level, seed: int, split: FoldSplit) -> tuple[np.ndarray, list[_Call]]:
        """The fold's test rows of this level and its prediction calls: (cache key, a function
        giving `_predict`'s arguments; the model is loaded only when one is made)."""
        rows = np.flatnonzero(np.isin(lv.records["sample_index"].to_numpy(), split.test))
        made: list[FoldTensors] = []

        def args(records: pd.DataFrame, stream: str) -> tuple[Any, ...]:
            model, normaliser = fold_model(seed, split)
            if not made:
                made.append(FoldTensors(lv.data, normaliser, device))
            # Common random numbers: the same draws under every condition and level, so a
            # stochastic model's scores differ only by what the condition changed.
            return model, made[0], records, derive_seed(cfg.seed, stream, seed, split.fold)

        key = f"{lv.key}_seed{seed}_fold{split.fold}"
        calls: list[_Call] = [(key, lambda: args(lv.records.iloc[rows], "evaluate"))]
        if len(lv.test_records):
            calls.append((f"{key}_official", lambda: args(lv.test_records, "evaluate-official")))
        return rows, calls

    units = [(seed, split) for seed in cfg.seeds for split in folds]
    workers = unit_workers(cfg.workers, cfg.num_threads, len(units), device, model_name)
    levels: dict[str, _Level] = {}
    prefetched: dict[str, np.ndarray] = {}
    if workers > 1:
        levels = {level: level_inputs(level) for level in cond.levels}

        def predict_unit(seed: int, split: FoldSplit) -> dict[str, np.ndarray]:
            out = {}
            for lv in levels.values():
                for key, make_args in fold_calls(lv, seed, split)[1]:
                    out[key] = _predict(*make_args())
            loaded.clear()
            return out

        prefetched = _predict_units(predict_unit, units, workers, cfg.num_threads, device)

    def raw_of(key: str, make_args: Callable[[], tuple[Any, ...]]) -> np.ndarray:
        if key in prefetched:
            return cache.get(key, prefetched.pop, key)
        return cache.get(key, lambda: _predict(*make_args()))

    for level in cond.levels:
        lv = levels.pop(level, None) or level_inputs(level)
        records, test_records, level_value = lv.records, lv.test_records, lv.value
        for seed in cfg.seeds:
            outputs = np.full((len(records), n_out), np.nan)
            fold_of_row = np.full(len(records), -1, dtype=np.int64)
            test_sum = np.zeros((len(test_records), n_out))
            for split in folds:
                rows, calls = fold_calls(lv, seed, split)
                raw = raw_of(*calls[0])
                outputs[rows] = _as_outputs(raw, data.task)
                fold_of_row[rows] = split.fold
                index = records["sample_index"].to_numpy()[rows]
                metrics = _score(data, index, outputs[rows])
                scores += _rows(model_name, cond.name, level, level_value, split.fold, seed,
                                metrics, keys)  # fmt: skip
                if len(test_records):
                    test_sum += raw_of(*calls[1])
            if (fold_of_row < 0).any():
                sample = records["sample_id"].iloc[int(np.flatnonzero(fold_of_row < 0)[0])]
                raise DataError(f"sample {sample!r} is in no test fold; check the manifest folds")
            index = records["sample_index"].to_numpy()
            pooled = _score(data, index, outputs)
            scores += _rows(model_name, cond.name, level, level_value, POOLED_FOLD, seed, pooled,
                            keys)  # fmt: skip
            predictions.append(_predictions(data, records, outputs, fold_of_row, seed))
            if first_cm is None:
                first_cm = _confusion(data, index, outputs)
            if len(test_records):
                # MERTools: the mean of the fold models' logits, then argmax.
                test_out = _as_outputs(test_sum / len(folds), data.task)
                test_index = test_records["sample_index"].to_numpy()
                scored = data.labels[test_index] >= 0
                if scored.any():
                    metrics = _score(data, test_index[scored], test_out[scored])
                    scores += _rows(model_name, cond.name, level, level_value, OFFICIAL_TEST_FOLD,
                                    seed, metrics, keys)  # fmt: skip
                ensemble = np.full(len(test_records), ENSEMBLE_FOLD, dtype=np.int64)
                predictions.append(_predictions(data, test_records, test_out, ensemble, seed))

    table = pd.DataFrame(scores, columns=list(SCORE_COLUMNS))
    metrics = summarise(table, model_name, cond, data.task)
    _write_csv(out["scores"], table)
    write_json(out["metrics"], metrics)
    _write_csv(out["predictions"], pd.concat(predictions, ignore_index=True))
    assert first_cm is not None
    cm, names = first_cm
    _write_csv(
        out["confusion_csv"],
        pd.DataFrame(cm, index=pd.Index(names, name="actual"), columns=names),
        index=True,
    )
    first = metrics["levels"][cond.levels[0]]
    headline = "acc7" if data.task == "regression" else "ua"
    plot_confusion(
        cm, names, out["confusion_png"],
        title=f"{model_name} / {cond.name} {cond.levels[0]}: {headline} {first[headline]:.3f}",
    )  # fmt: skip
    _track(params, model_name, cond.name, summary, metrics, list(out.values()))
    cache.clear()
    shown = REPORT_DEFAULTS[data.task]
    for level, m in metrics["levels"].items():
        log.info("%s / %s %s: %s", model_name, cond.name, level,
                 "  ".join(f"{k} {m[k]:.4f} ± {m[k + '_std']:.4f}" for k in shown))  # fmt: skip
    return metrics


def _score(data: ModelData, index: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The task's metrics of these rows' outputs (probabilities, or the predicted value)."""
    if data.task == "regression":
        assert data.targets is not None
        return regression_metrics(data.targets[index], outputs[:, 0])
    n = len(data.classes)
    if data.task == "classification_valence":
        assert data.valence is not None
        return valence_metrics(data.labels[index], outputs[:, :n].argmax(1), n,
                               data.valence[index], outputs[:, n])  # fmt: skip
    return classification_metrics(data.labels[index], outputs.argmax(1), n)


def _confusion(
    data: ModelData, index: np.ndarray, outputs: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Counts and class names: the store's classes, or the Acc-7 classes for regression."""
    if data.task == "regression":
        assert data.targets is not None
        shift = len(SENTIMENT_CLASSES) // 2
        t = rounded_scores(data.targets[index]).astype(np.int64) + shift
        p = rounded_scores(outputs[:, 0]).astype(np.int64) + shift
        return confusion_matrix(t, p, len(SENTIMENT_CLASSES)), SENTIMENT_CLASSES
    n = len(data.classes)
    cm = confusion_matrix(data.labels[index], outputs[:, :n].argmax(1), n)
    return cm, list(data.classes)


def summarise(
    table: pd.DataFrame, model_name: str, cond: ConditionStore, task: str = "classification"
) -> dict[str, Any]:
    """Per level: pooled score mean/std over seeds, and mean/std over all (fold, seed) pairs."""
    levels: dict[str, dict[str, float]] = {}
    for level in cond.levels:
        part = table[table["level"] == level]
        entry: dict[str, float] = {}
        for key in task_metric_keys(task):
            metric = part[part["metric"] == key]
            pooled = metric[metric["fold"] == POOLED_FOLD]["value"]
            folds = metric[~metric["fold"].isin(NOT_FOLD_ROWS)]["value"]
            entry[key] = float(pooled.mean())
            entry[f"{key}_std"] = float(pooled.std(ddof=0))
            entry[f"{key}_fold_mean"] = float(folds.mean())
            entry[f"{key}_fold_std"] = float(folds.std(ddof=0))
            official = metric[metric["fold"] == OFFICIAL_TEST_FOLD]["value"]
            if len(official):  # the fold models' mean on the official test set, over seeds
                entry[f"test_{key}"] = float(official.mean())
                entry[f"test_{key}_std"] = float(official.std(ddof=0))
        levels[level] = entry
    return {
        "model": model_name,
        "task": task,
        "condition": cond.name,
        "kind": cond.kind,
        "seeds": sorted(int(s) for s in table["seed"].unique()),
        "n_folds": int(table.loc[~table["fold"].isin(NOT_FOLD_ROWS), "fold"].nunique()),
        "levels": levels,
    }


def _rows(
    model: str, condition: str, level: str, level_value: float, fold: int | str, seed: int,
    metrics: dict[str, float], keys: tuple[str, ...],
) -> list[dict[str, Any]]:  # fmt: skip
    return [
        {
            "model": model,
            "condition": condition,
            "level": level,
            "level_value": level_value,
            "fold": str(fold),
            "seed": seed,
            "metric": key,
            "value": metrics[key],
        }
        for key in keys
    ]


def _with_overlay(
    data: ModelData, overlay: FeatureStore | None, spec: ModelSpec, frame_inputs: bool
) -> ModelData:
    """`data` with the modalities re-extracted for this level swapped in."""
    if overlay is None:
        return data
    names = set(overlay.feature_names())
    features = {m: e for m, e in spec.features.items() if set(spec.store_names(m)) <= names}
    if not features:
        return data
    swapped = load_model_data(overlay, replace(spec, features=features), frame_inputs)
    for m, x in swapped.inputs.items():
        if x.dim != data.inputs[m].dim:
            raise DataError(f"{overlay.root}: {x.feature} has dim {x.dim}, the clean store "
                            f"{data.inputs[m].dim}; regenerate the condition")  # fmt: skip
    return replace(data, inputs={**data.inputs, **swapped.inputs})


_Call = tuple[str, Callable[[], tuple[Any, ...]]]


@dataclass
class _Level:
    """What every fold model scores at one level: the tested records, the official test set's
    records, the data with the level's overlay, its numeric value and cache key."""

    records: pd.DataFrame
    test_records: pd.DataFrame
    data: ModelData
    value: float
    key: str


# The cell's unit predictor in a worker process (set by the pool's initializer; fork start).
_WORKER_CELL: Callable[[int, FoldSplit], dict[str, np.ndarray]] | None = None


def _set_worker_cell(
    predict_unit: Callable[[int, FoldSplit], dict[str, np.ndarray]], threads: int,
    device: torch.device,
) -> None:  # fmt: skip
    global _WORKER_CELL
    _WORKER_CELL = predict_unit
    configure_threads(threads, device)


def _unit_in_worker(seed: int, split: FoldSplit) -> dict[str, np.ndarray]:
    assert _WORKER_CELL is not None
    return _WORKER_CELL(seed, split)


def _predict_units(
    predict_unit: Callable[[int, FoldSplit], dict[str, np.ndarray]],
    units: list[tuple[int, FoldSplit]],
    workers: int,
    threads: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Every unit's raw predictions at every level, computed in `workers` forked processes (the
    same calls, seeds and threads as in this process, so the same values)."""
    from concurrent.futures import as_completed

    from robustmer.workers import worker_pool

    found: dict[str, np.ndarray] = {}
    with worker_pool(workers, _set_worker_cell, (predict_unit, threads, device)) as pool:
        for future in as_completed([pool.submit(_unit_in_worker, s, f) for s, f in units]):
            found.update(future.result())
    return found


def _load_fold(
    model_dir: Path, spec: ModelSpec, data: ModelData, split: FoldSplit, seed: int
) -> tuple[torch.nn.Module, Normaliser]:
    path = checkpoint_path(Path(model_dir), split.fold, seed)
    checkpoint = load_checkpoint(path, spec.name)
    _check_compatible(checkpoint["meta"], spec, data, split.test_speakers, path)
    model = build_model(spec, data.input_dims, len(data.classes), data.levels, data.part_dims)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise DataError(
            f"{path}: weights do not fit model {spec.name!r} ({exc}); "
            f"run `robustmer train {spec.name}`"
        ) from exc
    return model, Normaliser.from_state(checkpoint["normaliser"])


@torch.no_grad()
def _predict(
    model: torch.nn.Module, tensors: FoldTensors, records: pd.DataFrame, seed: int
) -> np.ndarray:
    """Logits `[N, C]`, or the predicted value `[N, 1]` of a regression model, for these record
    rows (missing modalities and feature noise applied).

    Models that sample at test time (NMER) draw from a torch RNG seeded with `seed`.
    """
    devices = [] if tensors.device.type == "cpu" else [tensors.device]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _predict_rows(model, tensors, records)


def _predict_rows(
    model: torch.nn.Module, tensors: FoldTensors, records: pd.DataFrame
) -> np.ndarray:
    model.eval()
    modalities = [m for m in MODALITIES if m in tensors.values]
    sample_index = records["sample_index"].to_numpy()
    present = {m: records[f"present_{m}"].to_numpy(dtype=bool) for m in modalities}
    noisy = [m for m in modalities if (records[f"t_{m}"] >= 0).any()]
    out = []
    for pos in iterate_batches(np.arange(len(records)), EVAL_BATCH):
        inputs, lengths, _ = tensors.batch(sample_index[pos])
        for m in noisy:
            inputs[m] = _noisy(inputs[m], (lengths or {}).get(m), records.iloc[pos], m)
        mask = None
        if not all(present[m][pos].all() for m in modalities):
            mask = {m: torch.as_tensor(present[m][pos], device=tensors.device) for m in modalities}
        out.append(forward(model, inputs, lengths, mask).float().cpu().numpy())
    if not out:  # no rows: only the width matters
        width = 1 if tensors.task == "regression" else len(tensors.labels.unique())
        return np.zeros((0, width + (tensors.task == "classification_valence")))
    return np.concatenate(out)


def _as_outputs(raw: np.ndarray, task: str) -> np.ndarray:
    """What is scored and written: class probabilities from logits, or the regression value;
    classification_valence: the probabilities, then the predicted valence as it is."""
    if task == "regression":
        return raw
    if task == "classification_valence":
        probs = torch.softmax(torch.from_numpy(raw[:, :-1]), 1).numpy()
        return np.concatenate([probs, raw[:, -1:]], axis=1)
    return torch.softmax(torch.from_numpy(raw), 1).numpy()


def _noisy(
    x: torch.Tensor, lengths: torch.Tensor | None, records: pd.DataFrame, modality: str
) -> torch.Tensor:
    """Each row's own deterministic noise (from its record seed) on its real frames only."""
    x = x.clone()
    rows = zip(records[f"t_{modality}"], records["seed"], records["schedule"],
               records["num_steps"], records["noise_kind"], strict=True)  # fmt: skip
    for j, (t, seed, sched, steps, kind) in enumerate(rows):
        if t < 0:
            continue
        n = x.shape[1] if lengths is None or x.dim() == 2 else int(lengths[j])
        part = x[j] if x.dim() == 2 else x[j, :n]
        noisy = noise_sample(
            part.cpu().numpy(), int(t), schedule(str(sched), int(steps)), str(kind),
            seed=int(seed) + MODALITIES.index(modality),
        )  # fmt: skip
        if x.dim() == 2:
            x[j] = torch.from_numpy(noisy).to(x)
        else:
            x[j, :n] = torch.from_numpy(noisy).to(x)
    return x


def _predictions(
    data: ModelData, records: pd.DataFrame, outputs: np.ndarray, folds: np.ndarray, seed: int
) -> pd.DataFrame:
    """One row per record: actual and predicted class (+ probabilities), or value (regression)."""
    classes = np.asarray(data.classes)
    index = records["sample_index"].to_numpy()
    if data.task == "regression":
        assert data.targets is not None
        actual, predicted = data.targets[index], np.round(outputs[:, 0], 6)
    else:
        labels = data.labels[index]  # -1: an unlabelled official test row, predicted only
        actual = np.where(labels >= 0, classes[np.maximum(labels, 0)], "")
        predicted = classes[outputs[:, : len(classes)].argmax(1)]
    frame = pd.DataFrame(
        {
            "level": records["level"].to_numpy(),
            "seed": seed,
            "sample_id": records["sample_id"].to_numpy(),
            "speaker": data.manifest["speaker"].to_numpy()[index],
            "fold": folds,
            **{f"present_{m}": records[f"present_{m}"].to_numpy() for m in MODALITIES},
            "actual": actual,
            "predicted": predicted,
        }
    )
    if data.task != "regression":
        for i, name in enumerate(data.classes):
            frame[f"prob_{name}"] = np.round(outputs[:, i], 6)
    if data.valence is not None:
        frame["valence_actual"] = data.valence[index]
        frame["valence_predicted"] = np.round(outputs[:, len(classes)], 6)
    return frame


def _write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=index, float_format="%.6g")


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
    saved = {**_SPEC_DEFAULTS, **meta.get("spec", {})}
    free = method(spec.arch).inference_options  # e.g. IMDer's sampler: weights unchanged
    current = {key: getattr(spec, key) for key in _SPEC_KEYS}
    for values in (saved, current):
        values["options"] = {k: v for k, v in (values.get("options") or {}).items()
                             if k not in free}  # fmt: skip
    problems = [
        f"{key} {saved.get(key)!r} != {current[key]!r}"
        for key in _SPEC_KEYS
        if saved.get(key) != current[key]
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


def _track(
    params: Params,
    model_name: str,
    condition: str,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    artifacts: list[Path],
) -> None:
    """Per-level scores and the files go to the parent MLflow run of the model's training."""
    flat = {
        f"eval/{condition}/{level}/{key}": value
        for level, entry in metrics["levels"].items()
        for key, value in entry.items()
    }
    tags = {
        "robustmer.model": model_name,
        "robustmer.evaluated": "true",  # the run's own `robustmer.stage` (train) stays
        **gate_tags(),
        **{k.replace("robustmer.", "robustmer.eval_"): v for k, v in git_tags().items()
           if k.startswith("robustmer.")},
    }  # fmt: skip
    with mlflow_run.resume_run(
        params, summary.get("mlflow_run_id"), f"{model_name}-evaluate", tags
    ) as run:
        run.log_metrics(flat)
        for path in artifacts:
            run.log_artifact(Path(path), f"evaluation/{condition}")
