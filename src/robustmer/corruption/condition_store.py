"""`robustmer corrupt <condition>`: generate a condition once and store it for every model.

Layout of `data/corrupted/<dataset>/<condition>/`:

    condition.json       name, kind, settings, levels, per-level summary, the clean store's hash
    records.parquet      one row per evaluated sample and level (see conditions.RECORD_COLUMNS)
    levels/<level>/      raw-media conditions only: overlay store of re-extracted features

The folder is built beside the target and swapped in at the end, so a failed or interrupted
run keeps the previous condition. Evaluation refuses a condition made from another store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer import MODALITIES, __version__
from robustmer.config import Params
from robustmer.corruption.conditions import Condition, build_records, level_summary
from robustmer.data.store import FeatureStore
from robustmer.errors import DataError
from robustmer.io import atomic_dir, atomic_path, read_json, write_json

log = logging.getLogger(__name__)

CONDITION_FILE = "condition.json"
RECORDS_FILE = "records.parquet"


def corrupt(params: Params, name: str, store_dir: Path, out_dir: Path) -> Path:
    """Generate condition `name` from the clean store at `store_dir` into `out_dir`."""
    from robustmer.corruption.raw_stage import build_overlay

    cond = Condition.from_params(params, name)
    store = FeatureStore(store_dir)
    started = time.perf_counter()
    have = store.modalities()
    records = build_records(cond, store.manifest, params["seed"], have)
    raw_modalities = [m for m in cond.raw_modalities if m in have]
    skipped = skip_reason(cond, store.dataset, have)
    if skipped:
        log.warning("skipped corrupt %s: %s", name, skipped)
    overlays: dict[str, list[str]] = {}
    with atomic_dir(out_dir) as tmp:
        with atomic_path(tmp / RECORDS_FILE, suffix=".parquet") as path:
            records.to_parquet(path, index=False)
        if raw_modalities:
            for label, group in records.groupby("level", sort=False):
                log.info("%s: corrupting raw %s at level %s", name, raw_modalities, label)
                overlays[str(label)] = build_overlay(
                    params, cond, group, store, tmp / "levels" / str(label), raw_modalities
                )
        write_json(
            tmp / CONDITION_FILE,
            {
                "name": cond.name,
                "kind": cond.kind,
                "settings": cond.cfg,
                "levels": [label for label, _ in cond.levels()],
                "level_values": [value for _, value in cond.levels()],
                "summary": level_summary(records, have),
                "raw_modalities": raw_modalities,
                **({"skipped": skipped} if skipped else {}),
                "overlay_features": overlays,
                "seed": params["seed"],
                "dataset": store.dataset,
                "store_manifest_sha256": store.info["manifest_sha256"],
                "robustmer_version": __version__,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
    log.info("%s: %d rows over %d level(s) in %s", name, len(records), len(cond.levels()), out_dir)
    return out_dir


def skip_reason(cond: Condition, dataset: str, have: list[str]) -> str | None:
    """Why `cond` means nothing on a dataset with only the modalities `have`, or None.

    Patterns and the IMDer schedule are defined over all three modalities; a missing rate needs
    two (one is always kept); a raw-media condition needs one of the modalities it corrupts.
    """
    held = ", ".join(have) or "no modality"
    over_all = cond.kind in ("missing_pattern", "imder_schedule") or cond.cfg.get("patterns")
    if over_all and len(have) < len(MODALITIES):
        return (f"dataset {dataset} has {held} only; condition {cond.name} ({cond.kind}) is "
                "defined over audio, video and text")  # fmt: skip
    if cond.kind == "missing_rate" and len(have) < 2:
        return (f"dataset {dataset} has {held} only; condition {cond.name} withholds modalities "
                "but always keeps one, so nothing could go missing")  # fmt: skip
    if cond.raw_modalities and not set(cond.raw_modalities) & set(have):
        return (f"dataset {dataset} has no {' or '.join(cond.raw_modalities)} features (its store "
                f"holds {', '.join(have) or 'nothing'}); condition {cond.name} ({cond.kind}) "
                f"corrupts {' and '.join(cond.raw_modalities)}")  # fmt: skip
    return None


@dataclass
class ConditionStore:
    """Read side of a generated condition."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        path = self.root / CONDITION_FILE
        if not path.is_file():
            raise DataError(
                f"{path}: not found; run `robustmer corrupt {self.root.name}` (or `dvc repro`) "
                "to generate the condition"
            )

    @cached_property
    def info(self) -> dict[str, Any]:
        return read_json(self.root / CONDITION_FILE)

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def levels(self) -> list[str]:
        return list(self.info["levels"])

    @cached_property
    def records(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / RECORDS_FILE)

    def level_records(self, level: str) -> pd.DataFrame:
        rec = self.records[self.records["level"] == level]
        if rec.empty:
            raise DataError(f"{self.root}: no records for level {level!r}")
        return rec.reset_index(drop=True)

    def overlay(self, level: str) -> FeatureStore | None:
        """The re-extracted features of a raw-media level (None for feature-level conditions)."""
        if level not in self.info.get("overlay_features", {}):
            return None
        return FeatureStore(self.root / "levels" / level)

    def check_store(self, store: FeatureStore) -> None:
        """The condition must come from this very store (same manifest), else regenerate it."""
        if self.info.get("store_manifest_sha256") != store.info["manifest_sha256"]:
            raise DataError(
                f"{self.root}: generated from another feature store (manifest hash differs); "
                f"run `robustmer corrupt {self.name}` again"
            )
