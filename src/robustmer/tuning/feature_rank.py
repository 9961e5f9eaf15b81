"""Rank each modality's features by the unimodal results of a previous run (MERBench's ranked
feature lists, which `mer2024_attention_topn` reads best first from `features: {m: [...]}`).

The score of a feature is the validation metric (mean over the fold models, at their best
epoch) of each trained model that reads that one feature alone; several such models keep the
best. Validation, not test, scores rank: ranking on the test folds and then scoring a model
built from the ranking on the same folds would leak the test labels into model selection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from robustmer.errors import DataError
from robustmer.io import read_json
from robustmer.metrics import higher_is_better


@dataclass(frozen=True)
class RankedFeature:
    feature: str  # the store name, <modality>/<name>
    score: float
    model: str  # the model entry whose validation score this is


def rank_features(summaries: Iterable[Path], metric: str = "ua") -> dict[str, list[RankedFeature]]:
    """Modality -> its single-feature models' features, best validation `metric` first.

    `summaries` are `train_summary.json` files; those of models that read more than one feature
    (or skipped ones) are passed over. A summary without `val_<metric>` in its folds is an error.
    """
    best: dict[str, RankedFeature] = {}
    for path in summaries:
        summary = read_json(path)
        features = summary.get("features") or []
        if summary.get("skipped") or len(features) != 1:
            continue
        key = f"val_{metric}"
        values = [f["val"][key] for f in summary.get("folds", []) if key in f.get("val", {})]
        if not values or len(values) != len(summary["folds"]):
            raise DataError(
                f"{path}: no validation {metric!r} in every fold; rank by a metric the model was "
                "scored with (--metric) or retrain it"
            )
        ranked = RankedFeature(features[0], sum(values) / len(values), str(summary["model"]))
        held = best.get(ranked.feature)
        if held is None or _better(ranked.score, held.score, metric):
            best[ranked.feature] = ranked
    out: dict[str, list[RankedFeature]] = {}
    for item in best.values():
        out.setdefault(item.feature.split("/", 1)[0], []).append(item)
    sign = -1.0 if higher_is_better(metric) else 1.0
    return {m: sorted(items, key=lambda r: (sign * r.score, r.feature)) for m, items in
            sorted(out.items())}  # fmt: skip


def features_entry(ranking: dict[str, list[RankedFeature]]) -> dict[str, list[str]]:
    """The `features:` value of a model entry that reads the ranked lists (names, best first)."""
    return {m: [r.feature.split("/", 1)[1] for r in items] for m, items in ranking.items()}


def _better(a: float, b: float, metric: str) -> bool:
    return a > b if higher_is_better(metric) else a < b
