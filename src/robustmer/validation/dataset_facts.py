"""Per-dataset facts the gate checks: the registry's expected counts, classes, folds and dims.

A generic gate cannot tell a MOSI pickle with a truncated test split from a complete one; the
registry (robustmer/data/registry.yaml) can. Each fact becomes one row (fact, expected, actual),
so a failure names exactly which fact of which dataset does not hold. Protocol integrity of an
explicit fold table (no sample in two roles of a fold, no speaker in both training and test of a
fold) is checked the same way.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustmer.data.protocol import read_roles
from robustmer.data.registry import dataset_info, registry
from robustmer.data.store import FeatureStore

FACT_COLUMNS = ("fact", "expected", "actual")
MMSA_REGRESSION_RANGE = (-3.0, 3.0)  # MMSA sentiment labels (CMU-MOSI/MOSEI)


def regression_range(store: FeatureStore) -> tuple[float, float] | None:
    """The range a dataset's `regression` targets must lie in, where one is known.

    The registry's `expected.regression_range` if it gives one, else [-3, 3] for datasets read
    by the MMSA adapter; None (finiteness is still checked) for anything else.
    """
    if store.dataset not in registry():
        return None
    info = dataset_info(store.dataset)
    given = info.expected.get("regression_range")
    if given is not None:
        return float(given[0]), float(given[1])
    return MMSA_REGRESSION_RANGE if info.adapter.startswith("adapters.mmsa:") else None


def dataset_facts(store: FeatureStore) -> pd.DataFrame:
    """One row per checked fact; empty for datasets the registry does not know or expect."""
    if store.dataset not in registry():
        return pd.DataFrame(columns=list(FACT_COLUMNS))
    expected = dataset_info(store.dataset).expected
    manifest = store.manifest
    labelled = manifest[manifest["label"].astype(str) != ""]
    rows: list[tuple[str, str, str]] = []
    subset = _is_subset(store)
    if "n_samples" in expected and not subset:
        rows.append(("labelled samples", str(expected["n_samples"]), str(len(labelled))))
    if "splits" in expected and not subset:
        counts = labelled["split"].value_counts() if "split" in manifest.columns else {}
        for split, n in expected["splits"].items():
            rows.append((f"samples in split {split!r}", str(n), str(int(counts.get(split, 0)))))
    if "n_speakers" in expected and not subset:
        rows.append(("speakers", str(expected["n_speakers"]), str(labelled["speaker"].nunique())))
    if "classes" in expected:
        rows.append(("classes", ",".join(expected["classes"]), ",".join(store.classes)))
    roles = read_roles(store.root)
    if "n_folds" in expected:
        rows.append(("folds", str(expected["n_folds"]), str(_n_folds(manifest, roles))))
    for feature, dim in (expected.get("dims") or {}).items():
        actual = str(store.meta(feature).dim) if feature in store.info["features"] else "absent"
        rows.append((f"{feature} dim", str(dim), actual))
    if roles is not None:
        rows += _role_integrity(manifest, roles)
    return pd.DataFrame(rows, columns=list(FACT_COLUMNS))


def _is_subset(store: FeatureStore) -> bool:
    """True when the user asked the adapter for part of the corpus (counts then differ)."""
    raw = (store.info.get("raw_corpus") or {}).get("info") or {}
    return bool(store.info.get("subset") or raw.get("subset"))


def _n_folds(manifest: pd.DataFrame, roles: pd.DataFrame | None) -> int:
    if roles is not None:
        return int(roles["fold"].nunique())
    if "fold" in manifest.columns:
        return int(manifest.loc[manifest["fold"] >= 0, "fold"].nunique())
    return 1


def _role_integrity(manifest: pd.DataFrame, roles: pd.DataFrame) -> list[tuple[str, str, str]]:
    speaker = dict(
        zip(manifest["sample_id"].astype(str), manifest["speaker"].astype(str), strict=True)
    )
    rows = []
    for fold, part in roles.groupby("fold", sort=True):
        dup = part["sample_id"].astype(str).duplicated()
        first: Any = part.loc[dup, "sample_id"].iloc[0] if dup.any() else ""
        rows.append((f"fold {fold}: each sample has one role", "", str(first)))
        by_role = {
            r: {speaker.get(str(s), "") for s in part.loc[part["role"] == r, "sample_id"]}
            for r in ("train", "test")
        }
        shared = sorted(by_role["train"] & by_role["test"])
        rows.append((f"fold {fold}: no speaker in both train and test", "", ",".join(shared[:5])))
    return rows
