"""Optuna studies over a model's search space: every trial trains every fold (and tuning seed)
exactly as `robustmer train` does, and its value is the mean over those fold models of the
validation metric at their best epoch: the validation speakers of each training fold. Test rows
are never scored, and their labels are never read (the recipes' contract).

Workers share the study through its storage (a journal file or an RDB URL), so several
processes on one machine or SLURM jobs on a cluster split the trials. The storage numbers the
trials as they are created; a worker whose new trial has `tune.trials` counted trials before it
marks that one FAIL (`not_run`: surplus) and stops, so the study ends with exactly `trials` run
trials, each run once. A trial that a dead worker on this machine left RUNNING is marked FAIL
(`not_run`: stale) and its values are queued again for the next worker. With the random sampler
the values of trial k depend only on the master seed and k, so the same params give the same
trials whatever the number of workers.

Outputs: the best trial's values as model entry keys in `best_file` (the CLI's
tuned/<dataset>/<model>.yaml, applied by every stage while `tune.models` lists the model), and
`trials.csv` and `tune_summary.json` in `models/<dataset>/<model>.tune/`. Each trial is a run
nested in the MLflow run `tune-<model>`; the trial's training run (with its fold runs) is nested
under the trial.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from robustmer.config import ModelSpec, Params, TrainConfig, validate_params
from robustmer.errors import ConfigError
from robustmer.io import write_json, write_text
from robustmer.metrics import higher_is_better
from robustmer.seeding import derive_seed
from robustmer.tuning.space import Dimension, overrides, search_space, with_values

log = logging.getLogger(__name__)

JOURNAL = "journal.log"
BEST_FILE = "best.yaml"
TRIALS_FILE = "trials.csv"
SUMMARY = "tune_summary.json"
NOT_RUN = "not_run"  # user attr of a trial that does not count: surplus, or re-queued


class _Pruned(Exception):
    """Raised from the fold callback to stop a trial that the pruner stops."""


def storage_for(spec: str | None, tune_dir: Path) -> Any:
    """The Optuna storage: a journal file (default: in `tune_dir`) or an RDB URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if spec and "://" in spec:
        return optuna.storages.RDBStorage(spec)
    path = Path(spec) if spec else tune_dir / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def tune_model(
    raw: dict[str, Any],
    model: str,
    dataset: str,
    store_dir: Path,
    tune_dir: Path,
    *,
    best_file: Path | None = None,
    storage: str | None = None,
    trials: int | None = None,
) -> dict[str, Any]:
    """Run trials of `model`'s search until the study has its trials; return the summary.

    `raw` is the params as written; the search starts from the model's entry without any
    earlier search result. The best values go to `best_file` (default `tune_dir/best.yaml`);
    `storage` and `trials` override `tune.storage` and `tune.trials`.
    """
    import optuna

    from robustmer.tracking import mlflow_run

    base = validate_params(raw, dataset=dataset, tuned=False)
    settings = base["tune"]
    space = search_space(base, model)
    reason = _unavailable(store_dir, base, model)
    if reason is not None:
        return write_not_tuned(model, dataset, tune_dir, best_file or tune_dir / BEST_FILE, reason)
    n_trials = int(trials or settings["trials"])
    spec = ModelSpec.from_params(base, model)
    metric = TrainConfig.from_params(base, spec).selection_metric
    direction = "maximize" if higher_is_better(metric) else "minimize"
    tune_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=storage_for(storage or settings["storage"], tune_dir),
        study_name=f"{dataset}-{model}",
        direction=direction,
        pruner=_pruner(settings),
        load_if_exists=True,
    )
    _check_same_search(study, space, settings, metric, n_trials)
    tags = {"robustmer.model": model, "robustmer.stage": "tune", "robustmer.dataset": dataset,
            "robustmer.model_dir": tune_dir.as_posix()}  # fmt: skip
    run_params = {"tune.trials": str(n_trials), "tune.sampler": settings["sampler"],
                  "tune.pruner": settings["pruner"], "tune.metric": metric}  # fmt: skip
    worker = f"{socket.gethostname()}:{os.getpid()}"
    tpe_seed = derive_seed(int(base["seed"]), "tune", model, worker)
    with mlflow_run.model_run(base, f"tune-{model}", tags, run_params) as parent:
        _requeue_stale(study)
        while True:
            trial = study.ask()
            if _position(study, trial.number) >= n_trials:
                trial.set_user_attr(NOT_RUN, "surplus: the study already had its trials")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                break
            study.sampler = _sampler(settings["sampler"], int(base["seed"]), model, trial.number,
                                     tpe_seed)  # fmt: skip
            values = {d.key: _suggest(trial, d) for d in space}
            trial.set_user_attr("worker", worker)
            trial.set_user_attr("values", values)  # as trained (grid values rounded)
            _run_trial(study, trial, raw, model, dataset, store_dir, tune_dir, values, metric,
                       settings)  # fmt: skip
        summary = write_outputs(study, model, dataset, metric, tune_dir, best_file)
        best = summary.get("best")
        if best is not None:
            parent.log_metrics({f"best_val_{metric}": best["value"]})
        parent.log_metrics({"complete_trials": summary["counts"].get("COMPLETE", 0)})
    return summary


def write_not_tuned(
    model: str, dataset: str, tune_dir: Path, best_file: Path, reason: str
) -> dict[str, Any]:
    """What a model without a search leaves: an empty result (nothing to apply) and why.

    Every model has a tune stage in the pipeline (as every model has a pretrain stage), so that
    `train` can depend on its result file; for most it is this note.
    """
    best_file.parent.mkdir(parents=True, exist_ok=True)
    write_text(best_file, f"# {model} on {dataset}: not tuned ({reason})\n{{}}\n")
    summary = {"model": model, "dataset": dataset, "tuned": False, "reason": reason,
               "counts": {}}  # fmt: skip
    tune_dir.mkdir(parents=True, exist_ok=True)
    write_json(tune_dir / SUMMARY, summary)
    return summary


def write_summary_from_storage(
    raw: dict[str, Any],
    model: str,
    dataset: str,
    store_dir: Path,
    tune_dir: Path,
    *,
    best_file: Path | None = None,
    storage: str | None = None,
    trials: int | None = None,
) -> dict[str, Any]:
    """The outputs of a study that workers finished, read back from its storage."""
    import optuna

    base = validate_params(raw, dataset=dataset, tuned=False)
    spec = ModelSpec.from_params(base, model)
    metric = TrainConfig.from_params(base, spec).selection_metric
    where = storage_for(storage or base["tune"]["storage"], tune_dir)
    study = optuna.load_study(study_name=f"{dataset}-{model}", storage=where)
    return write_outputs(study, model, dataset, metric, tune_dir, best_file)


def _unavailable(store_dir: Path, params: Params, model: str) -> str | None:
    from robustmer.data.model_data import unavailable
    from robustmer.data.store import FeatureStore

    return unavailable(FeatureStore(store_dir), ModelSpec.from_params(params, model))


def _position(study: Any, number: int) -> int:
    """How many trials before `number` count toward the study's trials (all but the ones
    marked as never run: surplus, or re-queued after their worker died)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return sum(1 for t in earlier if NOT_RUN not in t.user_attrs)


def _requeue_stale(study: Any) -> None:
    """Trials left RUNNING by a dead worker process on this machine: marked FAIL (not counted)
    and their values queued again, so no trial of the study is lost."""
    import optuna

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        name, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        # Optuna has no public call to finish another process's trial: its storage API does it.
        study._storage.set_trial_user_attr(t._trial_id, NOT_RUN, f"stale: worker {pid} died")
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(dict(t.params), skip_if_exists=False)
        log.warning("trial %d was left running by dead worker %s; its values are queued again",
                    t.number, pid)  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pruner(settings: dict[str, Any]) -> Any:
    import optuna

    if settings["pruner"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=int(settings["startup_trials"]))


def _sampler(kind: str, seed: int, model: str, number: int, tpe_seed: int) -> Any:
    """Random: seeded by the trial number (reproducible with any number of workers); TPE: one
    generator per worker (its proposals depend on the trials finished before)."""
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=derive_seed(seed, "tune", model, number))
    return optuna.samplers.TPESampler(seed=tpe_seed, n_startup_trials=10)


def _suggest(trial: Any, d: Dimension) -> Any:
    if d.choices is not None:
        return trial.suggest_categorical(d.key, list(d.choices))
    assert d.low is not None and d.high is not None
    if d.integer:
        return trial.suggest_int(d.key, int(d.low), int(d.high), step=int(d.step or 1),
                                 log=d.log)  # fmt: skip
    value = trial.suggest_float(d.key, d.low, d.high, step=d.step, log=d.log)
    # On a grid, low + k * step in floating point can show as 0.30000000000000004.
    return round(value, 12) if d.step is not None else value


def _check_same_search(
    study: Any, space: list[Dimension], settings: dict[str, Any], metric: str, n_trials: int
) -> None:
    """A study continued from its storage must be the same search (else: a clear error)."""
    key = repr(([d.__dict__ for d in space], settings["sampler"], settings["pruner"], metric))
    attrs = study.user_attrs
    if "search" not in attrs:
        study.set_user_attr("search", key)
    elif attrs["search"] != key:
        raise ConfigError(
            f"study {study.study_name!r} in its storage was started with another search space, "
            "sampler, pruner or metric; remove its journal (models/<dataset>/<model>.tune/) or "
            "name another `tune.storage` to start a new study"
        )


def _run_trial(
    study: Any,
    trial: Any,
    raw: dict[str, Any],
    model: str,
    dataset: str,
    store_dir: Path,
    tune_dir: Path,
    values: dict[str, Any],
    metric: str,
    settings: dict[str, Any],
) -> None:
    """Train the trial's model on every fold (pretraining first where the method has it) and
    tell the study its mean validation score, or that it was pruned or failed."""
    import optuna

    from robustmer.models.registry import method
    from robustmer.tracking import mlflow_run
    from robustmer.training.runner import pretrain_model, train_model

    trial_raw = with_values(raw, model, values)
    # The trial's values are the model's search result: no earlier one is required or applied.
    tune = dict(trial_raw.get("tune") or {})
    tune["models"] = [m for m in tune.get("models") or [] if m != model]
    trial_raw["tune"] = tune
    if settings.get("seeds"):
        trial_raw["train"] = {**trial_raw.get("train", {}), "seeds": list(settings["seeds"])}
    params = validate_params(trial_raw, dataset=dataset, tuned=False)
    spec = ModelSpec.from_params(params, model)
    scores: list[float] = []

    def on_unit(unit: dict[str, Any]) -> None:
        scores.append(float(unit["val"][f"val_{metric}"]))
        running = sum(scores) / len(scores)
        trial.report(running, len(scores) - 1)
        if trial.should_prune():
            raise _Pruned()

    work = Path(tempfile.mkdtemp(prefix=f"trial_{trial.number}_", dir=tune_dir))
    started = time.perf_counter()
    tags = {"robustmer.model": model, "robustmer.stage": "tune-trial",
            "robustmer.tune.trial": str(trial.number)}  # fmt: skip
    state, value = optuna.trial.TrialState.COMPLETE, math.nan
    try:
        with mlflow_run.model_run(params, f"trial-{trial.number}", tags,
                                  {k: str(v) for k, v in values.items()}) as run:  # fmt: skip
            try:
                pretrain = None
                if method(spec.arch).recipe.pretrains:
                    pretrain = pretrain_model(params, model, store_dir, work / "pretrain")
                train_model(params, model, store_dir, work / "model", pretrain_dir=pretrain,
                             on_unit=on_unit)  # fmt: skip
                value = sum(scores) / len(scores)
                run.log_metrics({f"val_{metric}": value})
            except _Pruned:
                state = optuna.trial.TrialState.PRUNED
            run.set_tags({"robustmer.tune.state": state.name})
    except Exception:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.exception("trial %d of %s failed", trial.number, model)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
    trial.set_user_attr("fold_scores", scores)
    if state == optuna.trial.TrialState.COMPLETE:
        study.tell(trial, value)
        log.info("trial %d: %s -> val %s %.4f", trial.number, values, metric, value)
    else:
        study.tell(trial, state=state)
        log.info("trial %d: %s pruned after %d fold models", trial.number, values, len(scores))


def _values(trial: Any) -> dict[str, Any]:
    """The values a trial trained with (Optuna's params, with grid values rounded)."""
    return dict(trial.user_attrs.get("values") or trial.params)


def write_outputs(
    study: Any, model: str, dataset: str, metric: str, tune_dir: Path, best_file: Path | None
) -> dict[str, Any]:
    """The best values (`best_file`), trials.csv and tune_summary.json from the study as the
    storage has it now."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        if NOT_RUN in t.user_attrs:
            continue
        rows.append({"number": t.number, "state": t.state.name,
                     "value": "" if t.value is None else repr(float(t.value)),
                     "seconds": t.user_attrs.get("seconds", ""),
                     "worker": t.user_attrs.get("worker", ""),
                     **{f"param.{k}": repr(v) for k, v in sorted(_values(t).items())}})  # fmt: skip
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("param."), k))
    lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    write_text(tune_dir / TRIALS_FILE, "\n".join(lines) + "\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "counts": counts,
    }
    if complete:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": float(best.value),
                           "params": _values(best)}  # fmt: skip
        header = (
            f"# robustmer tune {model} on {dataset}: trial {best.number} of {len(rows)}, "
            f"validation {metric} {best.value:.6f} (mean over the fold models).\n"
            f"# Applied over models.{model} by every stage while tune.models lists it.\n"
        )
        text = yaml.safe_dump(overrides(_values(best)), sort_keys=True)
        target = best_file or tune_dir / BEST_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, header + text)
        summary["best_file"] = target.as_posix()
    write_json(tune_dir / SUMMARY, summary)
    return summary
