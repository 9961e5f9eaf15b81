"""The `robustmer` command: one subcommand per pipeline stage.

Thin by design: parse options, load params.yaml, call the stage function, turn known errors into
a one-paragraph message and an exit code. DVC and Snakemake call exactly these commands. Heavy
libraries (torch, Great Expectations, MLflow) are imported inside the stage functions only.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from robustmer import paths, signals
from robustmer.config import (
    DEFAULT_PARAMS,
    Params,
    load_params,
    read_params_file,
    require_dataset,
    validate_params,
)
from robustmer.errors import ConfigError, RobustmerError, ValidationFailed

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible multimodal emotion recognition under noise and missing modalities.",
)

STAGES = (
    "acquire", "extract", "validate", "corrupt", "pretrain", "train", "evaluate", "report",
    "cross-corpus",
)  # fmt: skip
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
DatasetOpt = Annotated[
    str | None,
    typer.Option("--dataset", "-d", help="one of params.yaml `datasets` (needed when it lists "
                 "several)"),
]  # fmt: skip
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="run even though the validation gate failed on this store "
                 "(recorded in MLflow as robustmer.gate_forced)"),
]  # fmt: skip


def _gate(p: Params, stage: str, force: bool) -> None:
    """Refuse to read a store the validation gate rejected (docs/pipeline.md)."""
    from robustmer.gate_status import require_passed

    ds = require_dataset(p)
    require_passed(paths.validation_summary(ds), paths.feature_dir(ds), stage, force)


def _params(path: Path, dataset: str | None = None) -> Params:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return load_params(path, dataset)


def _dataset_params(path: Path, dataset: str | None) -> tuple[Params, str]:
    """Params for a stage that runs on one dataset, and that dataset."""
    p = _params(path, dataset)
    return p, require_dataset(p, str(path))


@app.command()
def acquire(
    dataset: Annotated[
        str | None, typer.Argument(help="dataset name (default: the one of params.yaml `datasets`)")
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option("--from", help="your copy, in the layout its authors distribute"),
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Produce data/raw/<dataset>/: generate, check your copy, or download a public dataset."""
    from robustmer.data.acquire import acquire as run
    from robustmer.data.registry import dataset_info

    p = _params(params)
    name = dataset or require_dataset(p, str(params))
    dataset_info(name)  # an unknown name fails here, listing the known ones
    out = run({**p, "dataset": name}, paths.raw_dir(name), source)
    typer.echo(f"acquired {name} into {out}")
    if name not in p["datasets"]:
        typer.echo(f"add {name} to `datasets` in {params} to run the other stages on it")


@app.command()
def datasets(
    name: Annotated[str | None, typer.Argument(help="show one dataset in full")] = None,
) -> None:
    """List the datasets of the registry, or show one: licence, citation, how to get it."""
    from robustmer.data.registry import dataset_info, registry

    if name is None:
        for info in registry().values():
            typer.echo(f"{info.name:18} {info.kind:9} {info.access:9} {info.title}")
        return
    info = dataset_info(name)
    for key in ("title", "kind", "access", "licence", "citation", "url", "sha256", "protocol"):
        value = getattr(info, key)
        if value:
            typer.echo(f"{key}: {value}")
    if info.instructions:
        typer.echo(f"how to get it: {info.instructions}")
    for key, value in info.options.items():
        typer.echo(f"option acquire.{name}.{key}: {value!r}")
    for key, value in info.expected.items():
        typer.echo(f"expected {key}: {value}")


@app.command()
def extract(params: ParamsOpt = DEFAULT_PARAMS, dataset: DatasetOpt = None) -> None:
    """Extract audio, video and text features into the canonical store data/features/<dataset>/."""
    from robustmer.features.extract import extract as run

    p, ds = _dataset_params(params, dataset)
    out = run(p, paths.raw_dir(ds), paths.feature_dir(ds))
    typer.echo(f"features written to {out}")


@app.command()
def validate(params: ParamsOpt = DEFAULT_PARAMS, dataset: DatasetOpt = None) -> None:
    """Great Expectations gate on the store; exits non-zero naming the failing samples."""
    from robustmer.validation.gate import run_gate

    p, ds = _dataset_params(params, dataset)
    summary = run_gate(
        p, paths.feature_dir(ds), paths.validation_summary(ds), paths.data_docs_dir(ds)
    )
    typer.echo(f"validation passed: {summary['n_expectations']} expectations on {ds}")


@app.command()
def corrupt(
    condition: Annotated[str, typer.Argument(help="a condition name from `corrupt.conditions`")],
    params: ParamsOpt = DEFAULT_PARAMS,
    dataset: DatasetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Generate one evaluation condition (masks, noise, re-extracted raw noise) once for all."""
    from robustmer.corruption.condition_store import corrupt as run

    p, ds = _dataset_params(params, dataset)
    _gate(p, "corrupt", force)
    out = run(p, condition, paths.feature_dir(ds), paths.corrupted_dir(ds, condition))
    if not _skipped(out / "condition.json"):
        typer.echo(f"condition {condition} written to {out}")


@app.command()
def pretrain(
    model: Annotated[str, typer.Argument(help="a model name from params.yaml `models`")],
    params: ParamsOpt = DEFAULT_PARAMS,
    dataset: DatasetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Stage-1 pretraining on clean data (NMER) into models/<dataset>/MODEL.pretrain/."""
    from robustmer.training.runner import pretrain_model

    p, ds = _dataset_params(params, dataset)
    _gate(p, "pretrain", force)
    out = pretrain_model(p, model, paths.feature_dir(ds), paths.pretrain_dir(ds, model))
    if not _skipped(out / paths.PRETRAIN_SUMMARY):
        typer.echo(f"pretraining of {model} in {out}")


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="a model name from params.yaml `models`")],
    params: ParamsOpt = DEFAULT_PARAMS,
    dataset: DatasetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Train one model with speaker-independent cross-validation into models/<dataset>/<model>/."""
    from robustmer.training.runner import train_model

    p, ds = _dataset_params(params, dataset)
    _gate(p, "train", force)
    out = train_model(
        p,
        model,
        paths.feature_dir(ds),
        paths.model_dir(ds, model),
        pretrain_dir=paths.pretrain_dir(ds, model),
    )
    if not _skipped(out / paths.SUMMARY_FILE):
        typer.echo(f"trained {model} into {out}")


@app.command()
def tune(
    model: Annotated[str, typer.Argument(help="a model name with a `tune.spaces` entry")],
    params: ParamsOpt = DEFAULT_PARAMS,
    dataset: DatasetOpt = None,
    trials: Annotated[int | None, typer.Option(help="trials of the study (tune.trials)")] = None,
    workers: Annotated[int, typer.Option(help="processes on this machine sharing the study")] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            help="journal file or RDB URL shared by every worker (tune.storage); "
            "run the same command on several machines to share the trials"
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Search MODEL's hyper-parameters (docs/tuning.md): the best values go to
    tuned/<dataset>/<model>.yaml, the study to models/<dataset>/<model>.tune/."""
    from robustmer.tuning.space import search_space
    from robustmer.tuning.study import tune_model, write_not_tuned, write_summary_from_storage

    raw = read_params_file(params)
    p = validate_params(raw, source=str(params), dataset=dataset, tuned=False)
    ds = require_dataset(p, str(params))
    if model not in p["models"]:
        raise ConfigError(f"model {model!r} is not in {params} `models`")
    best_file, tune_dir = paths.tuned_file(ds, model), paths.tune_dir(ds, model)
    if model not in p["tune"]["models"]:  # the pipeline's stage for a model without a search
        write_not_tuned(model, ds, tune_dir, best_file, "not in tune.models")
        typer.echo(f"{model}: not in tune.models, nothing to search; wrote {best_file}")
        return
    _gate(p, "tune", force)
    search_space(p, model)  # a bad space fails before any worker starts
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    args = (raw, model, ds, paths.feature_dir(ds), tune_dir)
    options = {"best_file": best_file, "storage": storage, "trials": trials}
    if workers == 1:
        summary = tune_model(*args, **options)
    else:
        from robustmer.workers import worker_pool

        with worker_pool(workers) as pool:
            for future in [pool.submit(tune_model, *args, **options) for _ in range(workers)]:
                future.result()
        summary = write_summary_from_storage(*args, **options)
    best = summary.get("best")
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["counts"].items()))
    if best is None:
        typer.echo(f"{model}: no trial completed ({summary.get('reason') or counts})")
        return
    typer.echo(
        f"tuned {model}: {counts}; best trial {best['number']}, validation "
        f"{summary['metric']} {best['value']:.4f} with {best['params']}; wrote {best_file}"
    )


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="a model name from params.yaml `models`")],
    condition: Annotated[str, typer.Argument(help="a condition from `corrupt.conditions`")],
    params: ParamsOpt = DEFAULT_PARAMS,
    dataset: DatasetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Score every fold and seed of MODEL on every level of CONDITION."""
    from robustmer.evaluation.skipped_cell import cell_skip_reason, write_skipped_cell

    p, ds = _dataset_params(params, dataset)
    _gate(p, "evaluate", force)
    model_dir, condition_dir = paths.model_dir(ds, model), paths.corrupted_dir(ds, condition)
    out = {
        "metrics": paths.metrics_file(ds, model, condition),
        "scores": paths.scores_file(ds, model, condition),
        "predictions": paths.predictions_file(ds, model, condition),
        "confusion_png": paths.confusion_png(ds, model, condition),
        "confusion_csv": paths.confusion_csv(ds, model, condition),
    }
    reason = cell_skip_reason(model_dir, condition_dir)
    if reason is not None:  # before torch's import: most cells of a one-modality corpus
        write_skipped_cell(model, condition, reason, out)
        return
    from robustmer.evaluation.runner import evaluate_model

    metrics = evaluate_model(
        p, model, condition, paths.feature_dir(ds), model_dir, condition_dir, out=out
    )
    for level, m in metrics["levels"].items():
        shown = [k for k in ("ua", "wa", "acc7", "mae") if k in m][:2]
        shown += [k for k in ("mer2023_score",) if k in m]  # MER2023: class and valence
        typer.echo(
            f"{model} / {condition} {level}: "
            + "  ".join(f"pooled {k.upper()} {m[k]:.4f} (fold mean {m[k + '_fold_mean']:.4f})"
                        for k in shown)
        )  # fmt: skip


def _skipped(summary: Path) -> bool:
    """Whether a stage wrote a skip record (a model or condition needs a modality the dataset
    lacks); the stage has already logged the one line saying why."""
    from robustmer.io import read_json

    try:
        return bool(read_json(summary).get("skipped"))
    except (OSError, ValueError):
        return False


@app.command()
def report(params: ParamsOpt = DEFAULT_PARAMS, dataset: DatasetOpt = None) -> None:
    """The robustness tables, curves and tidy results of every model x condition."""
    from robustmer.evaluation.report import write_report

    p, ds = _dataset_params(params, dataset)
    conditions = p["corrupt"]["conditions"]
    scores = [paths.scores_file(ds, m, c) for m in p["models"] for c in conditions]
    summaries = {m: paths.model_dir(ds, m) / paths.SUMMARY_FILE for m in p["models"]}
    out = write_report(p, scores, paths.report_dir(ds), summaries,
                       robustness_json=paths.robustness_metrics(ds))  # fmt: skip
    typer.echo(f"report written to {out}")


@app.command("cross-corpus")
def cross_corpus(
    name: Annotated[str, typer.Argument(help="a name from params.yaml `cross_corpus.evaluations`")],
    params: ParamsOpt = DEFAULT_PARAMS,
    force: ForceOpt = False,
) -> None:
    """Score models trained on one dataset on another, through shared classes."""
    from robustmer.errors import ConfigError
    from robustmer.evaluation.cross_corpus import evaluate_cross_corpus

    cells = _params(params)["cross_corpus"]["evaluations"]
    if name not in cells:
        raise ConfigError(f"{params}: no cross_corpus.evaluations.{name} (known: "
                          f"{', '.join(cells) or 'none'})")  # fmt: skip
    cell = cells[name]
    for ds in (cell["train"], cell["test"]):
        _gate(_params(params, ds), "cross-corpus", force)
    metrics = evaluate_cross_corpus(_params(params, cell["train"]), name)
    for model, conditions in metrics["models"].items():
        for condition, levels in conditions.items():
            for level, m in levels.items():
                typer.echo(f"{model} {cell['train']} -> {cell['test']} / {condition} {level}: "
                           f"UA {m['ua']:.4f} (fold models {m['ua_fold_mean']:.4f})")  # fmt: skip


@app.command()
def features(
    dataset: Annotated[
        str | None, typer.Argument(help="dataset name (default: the one of params.yaml `datasets`)")
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """List the store's features as a model entry names them: modality/name, level, dim, source."""
    from robustmer.data.store import FeatureStore

    name = dataset or require_dataset(_params(params), str(params))
    store = FeatureStore(paths.feature_dir(name))
    typer.echo(f"{store.root.as_posix()}: {len(store)} samples, classes {store.classes}; a model "
               "names a feature as `features: {modality: name}`")  # fmt: skip
    typer.echo(f"{'feature':34} {'level':9} {'dim':>6} {'rate':>7}  extractor")
    for feature in store.feature_names():
        meta = store.meta(feature)
        rate = f"{meta.frame_rate:g}" if meta.frame_rate else "-"
        source = ", ".join(f"{k}={v}" for k, v in sorted(meta.options().items())
                           if not isinstance(v, dict))  # fmt: skip
        typer.echo(f"{feature:34} {meta.level:9} {meta.dim:>6} {rate:>7}  {meta.version}"
                   + (f" ({source})" if source else ""))  # fmt: skip


@app.command("rank-features")
def rank_features(
    params: ParamsOpt = DEFAULT_PARAMS,
    dataset: DatasetOpt = None,
    metric: Annotated[str, typer.Option(help="validation metric to rank by")] = "ua",
) -> None:
    """Rank each modality's features by the validation score of the trained single-feature
    models, best first, as `mer2024_attention_topn` reads its `features` lists."""
    import yaml

    from robustmer.tuning.feature_rank import features_entry, rank_features

    p, ds = _dataset_params(params, dataset)
    summaries = [paths.model_dir(ds, m) / paths.SUMMARY_FILE for m in p["models"]]
    ranking = rank_features([s for s in summaries if s.is_file()], metric)
    if not ranking:
        raise ConfigError(
            f"models/{ds}: no trained model reads a single feature; train unimodal models "
            "(one feature each, e.g. audio_mlp) first"
        )
    for modality, items in ranking.items():
        for rank, item in enumerate(items, 1):
            typer.echo(f"{modality:6} {rank:>2}. {item.feature:34} val {metric} "
                       f"{item.score:.4f} ({item.model})")  # fmt: skip
    entry = yaml.safe_dump({"features": features_entry(ranking)}, default_flow_style=None)
    typer.echo(f"# a model entry reading these, best first:\n{entry.strip()}")


@app.command("ov-score")
def ov_score(
    truth: Annotated[Path, typer.Argument(help="ground truth CSV: name, openset")],
    predicted: Annotated[Path, typer.Argument(help="predictions CSV: name, openset")],
    synonyms: Annotated[
        Path | None,
        typer.Option(
            help="synonym groups: the per-sample JSON of MER-OV (name -> grouping string) or a "
            "lexicon, one comma-separated group per line"
        ),
    ] = None,
    parsing: Annotated[
        str,
        typer.Option(help="reference: split on quotes as the official scorer; literal: Python"),
    ] = "reference",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The MER-OV open-vocabulary metric: set accuracy, recall and their mean (docs/mer_ov.md)."""
    import json

    from robustmer.evaluation.open_vocabulary import PARSINGS, score_files

    if parsing not in PARSINGS:
        raise typer.BadParameter(f"--parsing must be one of {', '.join(PARSINGS)}")
    result = score_files(truth, predicted, synonyms, parsing)
    values = {"accuracy": result.accuracy, "recall": result.recall, "score": result.score,
              "n_samples": result.n_samples,
              "n_missing_predictions": result.n_missing_predictions}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    typer.echo(f"accuracy {result.accuracy:.6f}  recall {result.recall:.6f}  "
               f"score {result.score:.6f}  ({result.n_samples} samples)")  # fmt: skip
    if result.n_missing_predictions:
        typer.echo(f"{result.n_missing_predictions} sample(s) have no prediction (scored as "
                   "empty)", err=True)  # fmt: skip


@app.command("code-listings")
def code_listings() -> None:
    """Write data/code/<stage>.txt: each stage kind's source files with their sha256 (DVC's code
    dependency of that stage); a listing is replaced only when its files changed."""
    from robustmer import stage_code

    changed = stage_code.write_listings(Path.cwd())
    typer.echo(f"code listings: {', '.join(changed) or 'none'} changed, in {stage_code.LISTINGS}")


@app.command("track-init")
def track_init(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Create the MLflow store and experiment once, before parallel jobs log to it."""
    from robustmer.tracking.mlflow_run import experiment_name, init_tracking, tracking_uri

    p = _params(params)
    experiment_id = init_tracking(p)
    typer.echo(
        f"MLflow experiment {experiment_name(p)!r} (id {experiment_id}) ready at {tracking_uri(p)}"
    )


@app.command()
def lineage(
    target: Annotated[
        str,
        typer.Argument(
            help="an MLflow run id, a model folder or checkpoint (.pt), or a results/scores "
            "CSV: whole, FILE.csv:ROW (0-based) or FILE.csv:model=m,level=0.5,seed=1,..."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
    deep: Annotated[
        bool, typer.Option("--deep", help="re-hash every raw media and pack file, not a sample")
    ] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Trace TARGET to its commit, params, data and checkpoints; re-check every recorded hash.

    Exits 3 when a link is altered, stale or missing (docs/lineage.md).
    """
    import json

    from robustmer.tracking.audit import trace

    p = load_params(params) if params.is_file() else {}
    result = trace(target, Path.cwd(), deep=deep, params=p)
    typer.echo(json.dumps(result.to_json(), indent=2, default=str) if as_json else result.to_text())
    if not result.ok:
        raise typer.Exit(3)


def main() -> None:
    start = time.perf_counter()
    stage = sys.argv[1] if len(sys.argv) > 1 else ""
    signals.stop_on_signals()
    try:
        app()
    except SystemExit as exc:
        if signals.received() is not None:  # Ctrl-C, SIGTERM from SLURM / Snakemake
            _interrupted(stage)
        asked_help = any(a in ("--help", "-h") for a in sys.argv[2:])
        if exc.code in (0, None) and stage in STAGES and not asked_help:
            # Parsed by benchmarks/pipeline_timing.py for per-stage wall times.
            elapsed = time.perf_counter() - start
            typer.echo(f"[robustmer] {stage} finished in {elapsed:.2f} s", err=True)
        raise
    except ValidationFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except RobustmerError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        if signals.received() is None:
            raise
        _interrupted(stage, exc)  # an error the interrupt caused on its way out


def _interrupted(stage: str, secondary: BaseException | None = None) -> None:
    """One line and the signal's exit code (128 + n) for a stage a signal stopped."""
    sig = signals.received()
    assert sig is not None
    also = f" (while stopping: {type(secondary).__name__}: {secondary})" if secondary else ""
    typer.echo(
        f"interrupted by {sig.name}: {stage or 'robustmer'} stopped cleanly; its previous outputs "
        f"are intact and a rerun resumes where it stopped{also}",
        err=True,
    )
    sys.exit(signals.exit_code(sig))


if __name__ == "__main__":
    main()
