"""`robustmer report`: the robustness grid as one tidy table, markdown tables and curves.

Reads every (model, condition) scores CSV that `robustmer evaluate` wrote and writes into
`results/report/<dataset>/` what exists: a cell that was not evaluated, or was skipped because
its model or condition needs a modality the dataset lacks, is listed with the reason at the end
of `summary.md` instead of failing the report.

- `results.csv`: all tidy rows (model, condition, level, level_value, fold, seed, metric, value);
- `summary.csv`: per model, condition, level and metric the mean and std over folds and seeds
  (fold-level scores), of the pooled score over seeds, and of the official test set's score
  over seeds (`test_mean`, where the store has one; NaN elsewhere);
- `pseudo_labels.csv` (models that self-train): pseudo-labels per model, seed, fold, round, class.
- `summary.md`: per condition a table (models x levels) of mean ± std over folds and seeds
  (and one of the official test set, where there is one);
- `curves/<condition>.png`: metric against level, one line per model (bars for categorical
  levels such as the six missing patterns), and `curves/<condition>.csv` in long form for DVC
  plots (template `workflow/plots/robustness.json`: one line per model).

Each model is reported with the metrics of its task (read from its scores: classification or
`task: regression`): those `report.metrics` lists for that task, else the task's defaults
(`REPORT_DEFAULTS`), so a MOSI run shows Acc-2/F1/Acc-7/MAE/Corr without editing the params.
When both tasks are present, the second task's curves and overview get a `_<task>` suffix.

The report files are also logged to MLflow as a `report` run.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.config import Params
from robustmer.corruption.conditions import LEVEL_NAMES, Condition
from robustmer.errors import DataError
from robustmer.evaluation.plots import plot_metric_bars, plot_robustness
from robustmer.evaluation.robustness import ONLY_MISSING, reliance_table, robustness_table
from robustmer.io import atomic_path, read_json, write_json, write_text
from robustmer.metrics import REPORT_DEFAULTS, higher_is_better, metric_task, task_metric_keys
from robustmer.paths import (
    NOT_FOLD_ROWS,
    OFFICIAL_TEST_FOLD,
    POOLED_FOLD,
    SCORE_COLUMNS,
    dataset_of,
)

log = logging.getLogger(__name__)

LABELS = {
    "wa": "WA",
    "ua": "UA",
    "weighted_f1": "WF1",
    "macro_f1": "MF1",
    "acc2": "Acc-2",
    "f1": "F1",
    "acc2_has0": "Acc-2 (has-0)",
    "f1_has0": "F1 (has-0)",
    "acc2_non0": "Acc-2 (non-0)",
    "f1_non0": "F1 (non-0)",
    "acc3": "Acc-3",
    "acc5": "Acc-5",
    "acc7": "Acc-7",
    "mae": "MAE",
    "corr": "Corr",
    "valence_mse": "Valence MSE",
    "mer2023_score": "MER2023 score",
}
# shown as plain values, not as %
NOT_PERCENT = frozenset({"mae", "corr", "valence_mse", "mer2023_score"})
DEFINITIONS = {
    "classification": "WA = accuracy; UA = mean per-class recall; WF1 = support-weighted F1; "
    "MF1 = unweighted mean F1",
    "regression": "Acc-2 / F1 = sign accuracy / weighted F1 over samples with non-zero truth; "
    "Acc-7 = accuracy of the values clipped to [-3, 3] and rounded; MAE = mean absolute error; "
    "Corr = Pearson's r (MMSA metricsTop)",
    "classification_valence": "Valence MSE = mean squared error of the predicted valence over "
    "the samples whose valence is known; MER2023 score = WF1 - 0.25 * Valence MSE",
}


def load_scores(paths: Sequence[Path]) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """The scores CSVs that exist, concatenated, and (model, condition, why) for each cell that
    is not there: not evaluated yet (no file), or skipped (its model or condition needs a
    modality the dataset lacks; the reason is in the cell's metrics JSON). A malformed file is a
    DataError naming it and the fix, and so is a grid with no scores at all."""
    frames, absent = [], []
    for path in map(Path, paths):
        model, condition = path.parent.name, path.stem
        if not path.is_file():
            ds = dataset_of(path)
            run = f"robustmer evaluate {model} {condition}" + (f" --dataset {ds}" if ds else "")
            why = f"not evaluated: no {path}; run `{run}`"
            absent.append((model, condition, why))
            continue
        try:
            frame = pd.read_csv(path, dtype={"level": str, "fold": str})
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: unreadable scores CSV ({exc}); re-run evaluate") from exc
        absent_columns = [c for c in SCORE_COLUMNS if c not in frame.columns]
        reason = _skip_reason(path) if frame.empty and not absent_columns else None
        if reason is not None:
            absent.append((model, condition, f"skipped: {reason}"))
            continue
        if absent_columns or frame.empty:
            raise DataError(
                f"{path}: not a robustmer scores file (missing columns {absent_columns} or no "
                f"rows); re-run `robustmer evaluate {model} {condition}`"
            )
        frames.append(frame[list(SCORE_COLUMNS)])
    if not frames:
        first = f"; first: {absent[0][0]} / {absent[0][1]}: {absent[0][2]}" if absent else ""
        raise DataError(f"no scores to report ({len(absent)} cell(s) absent{first})")
    return pd.concat(frames, ignore_index=True), absent


def _skip_reason(scores: Path) -> str | None:
    """The reason a skipped cell's metrics JSON (results/metrics/<m>/<c>.json beside
    results/scores/<m>/<c>.csv) gives, or None."""
    metrics = scores.parents[2] / "metrics" / scores.parent.name / f"{scores.stem}.json"
    try:
        reason = read_json(metrics).get("skipped")
    except (OSError, ValueError):
        return None
    return str(reason) if reason else None


def absent_markdown(absent: Sequence[tuple[str, str, str]]) -> list[str]:
    """summary.md's list of the grid cells that have no scores, and why."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for model, condition, why in absent:  # one row per model and reason
        grouped.setdefault((model, why), []).append(condition)
    lines = ["## Cells without scores", "", "| model | conditions | why |", "|---|---|---|"]
    return lines + [f"| {m} | {', '.join(cs)} | {why} |" for (m, why), cs in grouped.items()]


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over (fold, seed) of fold scores and over seeds of pooled scores, per cell."""
    keys = ["model", "condition", "level", "level_value", "metric"]
    fold = results["fold"]
    folds = results[~fold.isin(NOT_FOLD_ROWS)].groupby(keys, sort=False, dropna=False)["value"]
    pooled = results[fold == POOLED_FOLD].groupby(keys, sort=False, dropna=False)["value"]
    official = results[fold == OFFICIAL_TEST_FOLD].groupby(keys, sort=False, dropna=False)
    out = pd.concat(
        {
            "mean": folds.mean(),
            "std": folds.std(ddof=0),
            "n": folds.count(),
            "pooled_mean": pooled.mean(),
            "pooled_std": pooled.std(ddof=0),
            "test_mean": official["value"].mean(),  # NaN where there is no official test set
            "test_std": official["value"].std(ddof=0),
        },
        axis=1,
    )
    return out.reset_index()


def task_metrics(params: Params, summary: pd.DataFrame) -> dict[str, list[str]]:
    """Per task present in the results (first seen first): the metrics its models show."""
    tasks = dict.fromkeys(metric_task(m) for m in summary["metric"])
    listed = params["report"]["metrics"]
    return {
        task: [m for m in listed if metric_task(m) == task] or list(REPORT_DEFAULTS[task])
        for task in tasks
    }


PROTOCOL_PHRASES = {
    "speaker_folds": "test folds by speaker (speaker-independent cross-validation)",
    "fold_table": "the dataset's published fold table",
    "splits": "the dataset's official train / validation / test split",
}


def protocol_phrase(dataset: str) -> str:
    """How the dataset's test rows were chosen, in words, from its registry protocol."""
    from robustmer.data.adapter_options import registry_entries  # plain data, no adapters

    protocol = registry_entries().get(dataset, {}).get("protocol", "")
    return PROTOCOL_PHRASES.get(protocol, PROTOCOL_PHRASES["speaker_folds"])


def markdown_summary(
    summary: pd.DataFrame, params: Params, metrics: Mapping[str, Sequence[str]]
) -> str:
    """Per condition, one models x levels table per metric; `metrics` as `task_metrics`."""
    dataset = str(params.get("dataset", ""))
    seeds = params["train"]["seeds"]
    shown = [m for keys in metrics.values() for m in keys]
    plain = [LABELS[m] for m in shown if m in NOT_PERCENT]
    unit = "Scores in %" + (f" ({' and '.join(plain)} as values)" if plain else "")
    lines = [
        f"# Robustness on `{dataset}`",
        "",
        f"{unit}: fold mean ± std over every (test fold, training seed) pair, "
        f"{protocol_phrase(dataset)}, {len(seeds)} training seed(s) {list(seeds)}. The pooled "
        "score (all test utterances at once, the number `robustmer evaluate` prints) is "
        "`pooled_mean` in summary.csv. Every model is scored on the same stored conditions "
        "(`data/corrupted/`); how a model fills a missing modality is its own (baselines: "
        "zeros in the normalised space, i.e. the training mean).",
        "",
    ]
    lines += _ranking_lines(summary, [keys[0] for keys in metrics.values()])
    for condition in summary["condition"].unique():
        part = summary[summary["condition"] == condition]
        kind = _kind(params, condition)
        levels = list(dict.fromkeys(part["level"]))
        lines += [f"## {condition} ({kind}: {LEVEL_NAMES.get(kind, 'level')})", ""]
        for metric in shown:
            cells = part[part["metric"] == metric]
            if cells.empty:
                continue
            lines += [f"{LABELS[metric]}:", ""]
            lines.append("| model | " + " | ".join(levels) + " |")
            lines.append("|---|" + "---|" * len(levels))
            for model in cells["model"].unique():
                row = cells[cells["model"] == model].set_index("level")
                values = _level_cells(row, levels, metric, "mean", "std")
                lines.append(f"| {model} | " + " | ".join(values) + " |")
            lines.append("")
        lines += _official_test_lines(part, shown, levels)
    lines += [
        "; ".join(DEFINITIONS[task] for task in metrics)
        + " (definitions: `robustmer.metrics`). Curves: `curves/*.png`.",
        "",
    ]
    return "\n".join(lines)


def _ranking_lines(summary: pd.DataFrame, firsts: Sequence[str]) -> list[str]:
    """The models on clean data, best first, by each task's first `report.metrics` entry (a
    protocol's ranking metric: WAF for MER2024), with the official test score where there is
    one."""
    lines: list[str] = []
    for metric in firsts:
        part = summary[(summary["condition"] == "clean") & (summary["metric"] == metric)]
        if part["model"].nunique() < 2:
            continue
        ranked = part.sort_values(["mean", "model"], ascending=[not higher_is_better(metric), True])
        official = ranked["test_mean"].notna().any()
        lines += [f"## Ranking (clean, {LABELS[metric]})", ""]
        extra = (" official test |", "---|") if official else ("", "")
        lines += ["| rank | model | fold mean ± std |" + extra[0], "|---|---|---|" + extra[1]]
        for rank, (_, row) in enumerate(ranked.iterrows(), start=1):
            cells = _level_cells(ranked.loc[[row.name]].set_index("level"), [row["level"]],
                                 metric, "mean", "std")  # fmt: skip
            if official:
                cells += _level_cells(ranked.loc[[row.name]].set_index("level"), [row["level"]],
                                      metric, "test_mean", "test_std")  # fmt: skip
            lines.append(f"| {rank} | {row['model']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _official_test_lines(part: pd.DataFrame, shown: Sequence[str], levels: list) -> list[str]:
    """The official test set's scores (mean of the fold models' logits), where there is one."""
    cells = part[part["test_mean"].notna()]
    if cells.empty:
        return []
    lines = ["Official test set (mean of the fold models' logits, then argmax; ± over seeds):", ""]
    lines.append("| model | metric | " + " | ".join(levels) + " |")
    lines.append("|---|---|" + "---|" * len(levels))
    for model in cells["model"].unique():
        for metric in shown:
            row = cells[(cells["model"] == model) & (cells["metric"] == metric)]
            if row.empty:
                continue
            values = _level_cells(row.set_index("level"), levels, metric, "test_mean", "test_std")
            lines.append(f"| {model} | {LABELS[metric]} | " + " | ".join(values) + " |")
    return [*lines, ""]


def _level_cells(row: pd.DataFrame, levels: list, metric: str, mean: str, std: str) -> list[str]:
    """One table row's "mean ± std" per level (in %, or as values for NOT_PERCENT metrics)."""
    scale, digits = (1, 3) if metric in NOT_PERCENT else (100, 1)
    return [
        f"{scale * row.loc[lv, mean]:.{digits}f} ± {scale * row.loc[lv, std]:.{digits}f}"
        if lv in row.index else "–"
        for lv in levels
    ]  # fmt: skip


def pseudo_label_table(train_summaries: Mapping[str, Path]) -> pd.DataFrame:
    """Self-training records of the models that have them: one row per model, seed, fold,
    round and class (pseudo-labels kept, and how many match the withheld truth if known)."""
    rows = []
    for model, path in train_summaries.items():
        if not Path(path).is_file():
            continue
        for fold in read_json(Path(path)).get("folds", []):
            for record in (fold.get("extra") or {}).get("pseudo_labels", []):
                for cls, n in record["counts"].items():
                    rows.append({
                        "model": model, "seed": fold["train_seed"], "fold": fold["fold"],
                        "round": record["round"], "class": cls, "n": n,
                        "correct": (record.get("correct") or {}).get(cls, math.nan),
                        "threshold": record["thresholds"][cls], "n_pool": record["n_pool"],
                    })  # fmt: skip
    columns = ["model", "seed", "fold", "round", "class", "n", "correct", "threshold", "n_pool"]
    return pd.DataFrame(rows, columns=columns)


def pseudo_label_markdown(table: pd.DataFrame) -> list[str]:
    """Per model and round: pseudo-labels per class (total over folds and seeds, and per fold)
    with their accuracy against the withheld labels where the corpus kept them."""
    lines = ["## Pseudo-labels (self-training)", ""]
    for (model, rnd), part in table.groupby(["model", "round"], sort=True):
        runs = part[["seed", "fold"]].drop_duplicates().shape[0]
        lines += [f"{model}, round {rnd} ({runs} fold models):", "",
                  "| class | kept | per fold model | accuracy |", "|---|---|---|---|"]  # fmt: skip
        for cls, c in part.groupby("class", sort=False):
            n, correct = int(c["n"].sum()), c["correct"].sum(min_count=1)
            acc = "–" if n == 0 or pd.isna(correct) else f"{100 * correct / n:.1f}"
            lines.append(f"| {cls} | {n} | {n / runs:.1f} | {acc} |")
        lines.append("")
    return lines


def write_report(
    params: Params,
    scores_paths: list[Path],
    out_dir: Path,
    train_summaries: Mapping[str, Path] | None = None,
    robustness_json: Path | None = None,
) -> Path:
    """Write the files listed in the module docstring into `out_dir`; return `out_dir`.

    `train_summaries` (model -> train_summary.json) adds the self-training records of the
    models that have them (`pseudo_labels.csv` and a section of summary.md). `robustness_json`
    receives the robustness numbers as a DVC metric (condition -> model -> values).
    """
    out_dir = Path(out_dir)
    results, absent = load_scores(scores_paths)
    summary = summary_table(results)
    metrics = task_metrics(params, summary)
    # The tidy columns of a cross-corpus table too (evaluation/cross_corpus.py): here both are
    # this dataset, so the two tables concatenate into one.
    dataset = str(params.get("dataset", ""))
    tidy = results.copy()
    tidy.insert(0, "test_dataset", dataset)
    tidy.insert(0, "train_dataset", dataset)
    _csv(out_dir / "results.csv", tidy)
    _csv(out_dir / "summary.csv", summary)
    text = markdown_summary(summary, params, metrics)
    files = [out_dir / "results.csv", out_dir / "summary.csv", out_dir / "summary.md"]
    kinds = {str(c): _kind(params, str(c)) for c in summary["condition"].unique()}
    headline = next(iter(metrics.values()))[0]  # the first metric shown, e.g. ua
    reference = params.get("report", {}).get("robustness_reference", "fusion_mlp")
    robust = robustness_table(summary, kinds, headline, reference)
    reliance = reliance_table(summary, kinds, headline)
    _csv(out_dir / "robustness.csv", robust)
    files.append(out_dir / "robustness.csv")
    text = text.rstrip("\n") + "\n\n" + "\n".join(robustness_markdown(robust, reliance))
    if robustness_json is not None:
        write_json(robustness_json, robustness_metric(robust, reliance))
    if absent:
        text = text.rstrip("\n") + "\n\n" + "\n".join(absent_markdown(absent))
        log.warning("report: %d grid cell(s) without scores (listed in summary.md)", len(absent))
    pseudo = pseudo_label_table(train_summaries or {})
    if len(pseudo):
        _csv(out_dir / "pseudo_labels.csv", pseudo)
        files.append(out_dir / "pseudo_labels.csv")
        text = text.rstrip("\n") + "\n\n" + "\n".join(pseudo_label_markdown(pseudo))
    write_text(out_dir / "summary.md", text)
    for i, (task, keys) in enumerate(metrics.items()):
        suffix = f"_{task}" if i else ""
        for condition in summary["condition"].unique():
            files += _curves(params, summary, condition, keys[0], out_dir / "curves", suffix)
        overview = task_metric_keys(task) if task == "classification" else keys
        files.append(_overview(params, summary, overview, out_dir / f"overview{suffix}.png"))
    _track(params, files, robustness_metric(robust, reliance))
    return out_dir


def robustness_metric(robust: pd.DataFrame, reliance: pd.DataFrame) -> dict[str, Any]:
    """The DVC metric: condition -> model -> relative / effective (raw and normalised), and
    reliance -> model -> modality -> drop."""
    out: dict[str, Any] = {}
    for row in robust.itertuples(index=False):
        out.setdefault(str(row.condition), {})[str(row.model)] = {
            k: _finite(getattr(row, k))
            for k in ("relative", "effective", "relative_norm", "effective_norm")
        }
    if len(reliance):
        out["reliance"] = {
            str(row["model"]): {m: _finite(row[m]) for m in ONLY_MISSING}
            for _, row in reliance.iterrows()
        }
    return out


def _finite(value: Any) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def robustness_markdown(robust: pd.DataFrame, reliance: pd.DataFrame) -> list[str]:
    """summary.md's robustness section: relative / effective per model (rows) and condition."""
    if not len(robust):
        return []
    metric, reference = robust["metric"].iloc[0], robust["reference"].iloc[0]
    conditions = list(dict.fromkeys(robust["condition"]))
    lines = [
        "## Robustness as one number",
        "",
        f"{LABELS.get(metric, metric)} fold means. Relative: area under the curve (trapezoid, "
        "levels 0.1 apart, the clean score first); effective: its gain over the reference "
        f"`{reference}` shifted to the same clean score (0: robust only by starting higher). "
        "Raw values, then in brackets min-max normalised over the models below "
        "(docs/robustness.md).",
        "",
        "| model | " + " | ".join(conditions) + " |",
        "|---|" + "---|" * len(conditions),
    ]
    cell = robust.set_index(["model", "condition"])
    for model in dict.fromkeys(robust["model"]):
        values = []
        for c in conditions:
            if (model, c) not in cell.index:
                values.append("")
                continue
            r = cell.loc[(model, c)]
            values.append(f"{r['relative']:.3f} / {r['effective']:+.3f} "
                          f"({r['relative_norm']:.2f} / {r['effective_norm']:.2f})")  # fmt: skip
        lines.append(f"| {model} | " + " | ".join(values) + " |")
    if len(reliance):
        lines += [
            "",
            "Reliance: the clean score minus the score with only that modality missing "
            "(the missing-pattern condition), in points.",
            "",
            "| model | " + " | ".join(ONLY_MISSING) + " |",
            "|---|" + "---|" * len(ONLY_MISSING),
        ]
        for _, row in reliance.iterrows():
            drops = " | ".join(f"{100 * row[m]:+.1f}" if math.isfinite(row[m]) else ""
                               for m in ONLY_MISSING)  # fmt: skip
            lines.append(f"| {row['model']} | {drops} |")
    return [*lines, ""]


def _curves(
    params: Params,
    summary: pd.DataFrame,
    condition: str,
    metric: str,
    folder: Path,
    suffix: str = "",
) -> list[Path]:
    part = summary[(summary["condition"] == condition) & (summary["metric"] == metric)]
    if part.empty:  # no model of this task was scored on this condition
        return []
    long = part[["model", "level", "level_value", "mean", "std", "pooled_mean"]].rename(
        columns={"mean": metric, "std": f"{metric}_std", "pooled_mean": f"{metric}_pooled"}
    )
    csv = folder / f"{condition}{suffix}.csv"
    _csv(csv, long)
    kind = _kind(params, condition)
    curves = {
        model: (list(g["level"]), list(g["mean"]), list(g["std"]))
        for model, g in part.groupby("model", sort=False)
    }
    values = list(part.drop_duplicates("level")["level_value"])
    numeric = None if any(math.isnan(v) for v in values) else values
    png = folder / f"{condition}{suffix}.png"
    plot_robustness(
        curves, png, xlabel=LEVEL_NAMES.get(kind, "level"),
        ylabel=f"{LABELS[metric]} (mean ± std over folds and seeds)", numeric_x=numeric,
        title=f"{params['dataset']}: {condition}",
    )  # fmt: skip
    return [csv, png]


def _overview(params: Params, summary: pd.DataFrame, keys: Sequence[str], path: Path) -> Path:
    """Bars of `keys` at the first level of the first condition (clean by default)."""
    summary = summary[summary["metric"].isin(keys)]
    condition = summary["condition"].iloc[0]
    level = summary.loc[summary["condition"] == condition, "level"].iloc[0]
    part = summary[(summary["condition"] == condition) & (summary["level"] == level)]
    models = list(dict.fromkeys(part["model"]))
    pick = {k: part[part["metric"] == k].set_index("model") for k in keys}
    plot_metric_bars(
        models,
        {LABELS[k]: [pick[k].loc[m, "mean"] for m in models] for k in keys},
        {LABELS[k]: [pick[k].loc[m, "std"] for m in models] for k in keys},
        path,
        title=f"{params['dataset']}: {condition} {level}",
    )
    return path


def _kind(params: Params, condition: str) -> str:
    try:
        return Condition.from_params(params, condition).kind
    except Exception:  # a condition since removed from params: still report it
        return "unknown"


def _csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _track(params: Params, files: list[Path], robustness: Mapping[str, Any]) -> None:
    from robustmer.tracking import mlflow_run
    from robustmer.tracking.lineage import git_tags

    tags: dict[str, Any] = {"robustmer.stage": "report", **git_tags()}
    # MLflow metric keys allow letters, digits, _ - . / and spaces only.
    flat = {
        re.sub(r"[^A-Za-z0-9_./ -]", "_", f"robustness/{group}/{model}/{key}"): value
        for group, models in robustness.items()
        for model, values in models.items()
        for key, value in values.items()
        if value is not None
    }
    with mlflow_run.model_run(params, "report", tags, {"dataset": str(params["dataset"])}) as run:
        run.log_metrics(flat)
        for path in files:
            run.log_artifact(path, "report")
