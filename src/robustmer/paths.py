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

# Inside a model folder: what `train` / `pretrain` write beside the checkpoints.
SUMMARY_FILE = "train_summary.json"
PRETRAIN_SUMMARY = "pretrain_summary.json"
SUMMARY_FILES = {"train": SUMMARY_FILE, "pretrain": PRETRAIN_SUMMARY}
RUN_RECORDS = "mlflow-runs"  # a hyphen: never a model name, so never a model folder


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def feature_dir(dataset: str) -> Path:
    return FEATURES / dataset


def validation_summary(dataset: str) -> Path:
    return RESULTS / "validation" / f"{dataset}.json"


def data_docs_dir(dataset: str) -> Path:
    return RESULTS / "validation" / f"{dataset}_data_docs"


def model_dir(model: str) -> Path:
    return MODELS / model


def pretrain_dir(model: str) -> Path:
    """Stage-1 checkpoints (NMER); for one-stage models a note that there is none."""
    return MODELS / f"{model}.pretrain"


def corrupted_dir(dataset: str, condition: str) -> Path:
    return CORRUPTED / dataset / condition


def metrics_file(model: str, condition: str) -> Path:
    """DVC metric: per-level scores of one model under one condition (mean ± std)."""
    return RESULTS / "metrics" / model / f"{condition}.json"


# The columns of a scores file (one tidy row per model, condition, level, fold, seed, metric).
SCORE_COLUMNS = ("model", "condition", "level", "level_value", "fold", "seed", "metric", "value")
# Score rows that are not one fold's: pooled over the folds, and an official test set outside the
# CV predicted by the mean of the fold models (MERTools).
POOLED_FOLD = "all"
OFFICIAL_TEST_FOLD = "test"
NOT_FOLD_ROWS = (POOLED_FOLD, OFFICIAL_TEST_FOLD)  # made by every fold model of a seed


def scores_file(model: str, condition: str) -> Path:
    """Tidy rows (model, condition, level, fold, seed, metric, value): `SCORE_COLUMNS`."""
    return RESULTS / "scores" / model / f"{condition}.csv"


def predictions_file(model: str, condition: str) -> Path:
    return RESULTS / "predictions" / condition / f"{model}.csv"


def confusion_png(model: str, condition: str) -> Path:
    return RESULTS / "plots" / condition / f"{model}_confusion.png"


def confusion_csv(model: str, condition: str) -> Path:
    return RESULTS / "plots" / condition / f"{model}_confusion.csv"


def report_dir(dataset: str) -> Path:
    return RESULTS / "report" / dataset


def robustness_metrics(dataset: str) -> Path:
    """DVC metric: relative and effective robustness per condition and model (the report's)."""
    return RESULTS / "robustness" / f"{dataset}.json"


def run_record_path(out_dir: Path) -> Path:
    """Where the DVC-visible record of a stage's MLflow run goes: beside the model folders."""
    return Path(out_dir).parent / RUN_RECORDS / f"{Path(out_dir).name}.json"
