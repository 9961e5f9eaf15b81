"""Where each stage reads and writes, relative to the project root.

dvc.yaml and workflow/rules/*.smk spell out the same paths; tests/test_workflow_parity.py checks
that both front doors declare the outputs listed here.
"""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
FEATURES = Path("data/features")
CORRUPTED = Path("data/corrupted")
MODELS = Path("models")
RESULTS = Path("results")
TUNED = Path("tuned")

# Inside a model folder: what `train` / `pretrain` write beside the checkpoints.
SUMMARY_FILE = "train_summary.json"
PRETRAIN_SUMMARY = "pretrain_summary.json"
SUMMARY_FILES = {"train": SUMMARY_FILE, "pretrain": PRETRAIN_SUMMARY}
RUN_RECORDS = "mlflow-runs"  # a hyphen: never a dataset name, so never a dataset folder


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def feature_dir(dataset: str) -> Path:
    return FEATURES / dataset


def results_dir(dataset: str) -> Path:
    """Everything evaluated on `dataset`: validation, scores, metrics, plots, its report."""
    return RESULTS / dataset


def validation_summary(dataset: str) -> Path:
    return RESULTS / dataset / "validation.json"


def data_docs_dir(dataset: str) -> Path:
    return RESULTS / dataset / "data_docs"


def model_dir(dataset: str, model: str) -> Path:
    """A model trained on `dataset`: every dataset of a project keeps its own (docs/datasets.md)."""
    return MODELS / dataset / model


def pretrain_dir(dataset: str, model: str) -> Path:
    """Stage-1 checkpoints (NMER); for one-stage models a note that there is none."""
    return MODELS / dataset / f"{model}.pretrain"


def tune_dir(dataset: str, model: str) -> Path:
    """A model's hyper-parameter search: its journal, trials.csv, summary (docs/tuning.md)."""
    return MODELS / dataset / f"{model}.tune"


def tuned_file(dataset: str, model: str) -> Path:
    """The search's best values as model entry keys; applied when the model is in tune.models."""
    return TUNED / dataset / f"{model}.yaml"


def corrupted_dir(dataset: str, condition: str) -> Path:
    return CORRUPTED / dataset / condition


def metrics_file(dataset: str, model: str, condition: str) -> Path:
    """DVC metric: per-level scores of one model under one condition (mean ± std)."""
    return RESULTS / dataset / "metrics" / model / f"{condition}.json"


# The columns of a scores file (one tidy row per model, condition, level, fold, seed, metric).
SCORE_COLUMNS = ("model", "condition", "level", "level_value", "fold", "seed", "metric", "value")
# Score rows that are not one fold's: pooled over the folds, and an official test set outside the
# CV predicted by the mean of the fold models (MERTools).
POOLED_FOLD = "all"
OFFICIAL_TEST_FOLD = "test"
NOT_FOLD_ROWS = (POOLED_FOLD, OFFICIAL_TEST_FOLD)  # made by every fold model of a seed


def scores_file(dataset: str, model: str, condition: str) -> Path:
    """Tidy rows (model, condition, level, fold, seed, metric, value): `SCORE_COLUMNS`."""
    return RESULTS / dataset / "scores" / model / f"{condition}.csv"


def predictions_file(dataset: str, model: str, condition: str) -> Path:
    return RESULTS / dataset / "predictions" / condition / f"{model}.csv"


def confusion_png(dataset: str, model: str, condition: str) -> Path:
    return RESULTS / dataset / "plots" / condition / f"{model}_confusion.png"


def confusion_csv(dataset: str, model: str, condition: str) -> Path:
    return RESULTS / dataset / "plots" / condition / f"{model}_confusion.csv"


def report_dir(dataset: str) -> Path:
    return RESULTS / dataset / "report"


def robustness_metrics(dataset: str) -> Path:
    """DVC metric: relative and effective robustness per condition and model (the report's)."""
    return RESULTS / dataset / "robustness.json"


def cross_corpus_dir(name: str) -> Path:
    """One cross-corpus evaluation (`cross_corpus.evaluations.<name>`): its tables."""
    return RESULTS / "cross_corpus" / name


def cross_corpus_metrics(name: str) -> Path:
    """DVC metric of one cross-corpus evaluation (mean ± std per model, condition and level)."""
    return RESULTS / "cross_corpus" / f"{name}.json"


def dataset_of(path: Path) -> str | None:
    """The dataset a `models/<ds>/...` or `results/<ds>/...` path belongs to, if it is one."""
    parts = Path(path).parts
    for root in (MODELS.name, RESULTS.name):
        if root in parts:
            i = len(parts) - 1 - parts[::-1].index(root)
            if i + 1 < len(parts) and parts[i + 1] not in (RUN_RECORDS, "cross_corpus"):
                return parts[i + 1]
    return None


def run_record_path(out_dir: Path) -> Path:
    """Where the DVC-visible record of a stage's MLflow run goes: `models/mlflow-runs/<ds>/`,
    one folder over every dataset so that dvc.yaml lists it once as a metrics folder."""
    out_dir = Path(out_dir)
    return out_dir.parent.parent / RUN_RECORDS / out_dir.parent.name / f"{out_dir.name}.json"
