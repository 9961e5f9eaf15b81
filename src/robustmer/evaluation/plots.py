"""Matplotlib figures (Agg backend, no display needed): confusion matrices and metric bars.

Figures are written through `atomic_path`, so a crashed plot never leaves a half-written PNG
that DVC would cache. They are `matplotlib.figure.Figure` objects drawn by the Agg canvas that
`savefig` picks for PNG: pyplot (its import, backend selection and figure manager) is never
loaded, which an evaluate cell would pay on every start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustmer.io import atomic_path


def _figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """A figure and its axes, as `pyplot.subplots` gives them, without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> None:
    """Two panels: raw counts and row-normalised rates (each row = one true class)."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = 2.4 + 0.55 * len(classes)
    fig, axes = _figure(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    panels = ((cm, "counts", "d", None), (rates, "row-normalised (recall)", ".2f", 1.0))
    for ax, (matrix, label, fmt, vmax) in zip(axes, panels, strict=True):
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(label)
        limit = matrix.max() if matrix.size else 0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                value = matrix[i, j]
                colour = "white" if limit and value > 0.6 * limit else "black"
                ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour)
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_note(path: Path, text: str) -> None:
    """A figure that only says why there is no plot (a skipped grid cell)."""
    import textwrap

    fig, ax = _figure(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(text, 70), ha="center", va="center", fontsize=9)
    _save(fig, path)


def plot_metric_bars(
    models: Sequence[str],
    means: Mapping[str, Sequence[float]],
    stds: Mapping[str, Sequence[float]],
    path: Path,
    title: str = "",
) -> None:
    """Grouped bars: one group per model, one bar per metric, error bars = std over folds."""
    metrics = list(means)
    width = 0.8 / max(len(metrics), 1)
    x = np.arange(len(models))
    fig, ax = _figure(figsize=(max(5.0, 1.4 * len(models) + 2), 4), constrained_layout=True)
    for i, metric in enumerate(metrics):
        ax.bar(
            x + (i - (len(metrics) - 1) / 2) * width,
            means[metric],
            width,
            yerr=stds[metric],
            capsize=3,
            label=metric,
        )
    ax.set_xticks(x, models, rotation=20, ha="right")
    if _unit_range(means.values()):
        ax.set_ylim(0, 1.15)  # headroom above 1.0 for the legend
        ax.set_yticks(np.linspace(0, 1, 6))
    else:  # MAE or Corr: autoscale, with headroom for the legend
        ax.margins(y=0.3)
    ax.set_ylabel("score (fold mean ± std)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=min(len(metrics), 4), fontsize="small", loc="upper center")
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_robustness(
    curves: Mapping[str, tuple[Sequence[str], Sequence[float], Sequence[float]]],
    path: Path,
    xlabel: str,
    ylabel: str,
    numeric_x: Sequence[float] | None = None,
    title: str = "",
) -> None:
    """One line per model (x = level, band = ± std); grouped bars when levels are categories.

    `curves[model] = (level labels, means, stds)`, every model with the same labels in order;
    `numeric_x` gives the level values when the axis is numeric (missing rate, T, SNR).
    """
    fig, ax = _figure(figsize=(6.4, 4.2), constrained_layout=True)
    models = list(curves)
    labels = list(next(iter(curves.values()))[0]) if curves else []
    if numeric_x is not None and len(labels) > 1:
        x = np.asarray(numeric_x, dtype=float)
        for model in models:
            _, mean, std = curves[model]
            mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
            ax.plot(x, mean, marker="o", label=model)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
        ax.set_xticks(x, labels)
    else:
        width = 0.8 / max(len(models), 1)
        x = np.arange(len(labels))
        for i, model in enumerate(models):
            _, mean, std = curves[model]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
                   label=model)  # fmt: skip
        ax.set_xticks(x, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if _unit_range(c[1] for c in curves.values()):
        ax.set_ylim(0, 1.05)  # scores in [0, 1]; MAE (or a negative Corr) is autoscaled
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    _save(fig, path)


def _unit_range(means: Iterable[Sequence[float]]) -> bool:
    """Whether every mean (NaN aside) lies in [0, 1], the range of accuracies and F1s."""
    values = np.concatenate([np.asarray(m, dtype=float).ravel() for m in means] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    return bool(((values >= 0) & (values <= 1)).all())


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
