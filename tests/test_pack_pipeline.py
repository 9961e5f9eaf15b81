"""Feature packs (MMIN HDF5, MMSA pickle, MERTools .npy) through acquire, extract, validate,
train and evaluate, as a user's copy would go."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import eval_outputs
from dataset_fixtures_packs import build_mertools_layout, build_mmin_pack, build_mmsa_pickle

from robustmer.config import validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.data.registry import dataset_info
from robustmer.data.store import FeatureStore
from robustmer.errors import DataError, ValidationFailed
from robustmer.evaluation.runner import evaluate_model
from robustmer.features.extract import extract
from robustmer.io import read_json
from robustmer.training.runner import train_model
from robustmer.validation.gate import run_gate


def mmin(root: Path) -> Path:
    build_mmin_pack(root / "pack")
    return root / "pack"


def mmsa(root: Path) -> Path:
    build_mmsa_pickle(root / "pack" / "aligned_50.pkl", dims=(5, 20, 768))
    return root / "pack"


def mertools(root: Path) -> Path:
    build_mertools_layout(root / "pack", n_labelled=30)
    return root / "pack"


# dataset, fixture builder, the model's features, adapter options, what the gate must say
CASES: list[tuple[str, Callable[[Path], Path], dict[str, str], dict[str, Any], str | None]] = [
    (
        "iemocap",
        mmin,
        {"audio": "comparE", "video": "denseface", "text": "bert_large"},
        {"dims": {"audio": 13, "video": 7, "text": 11}, "expected_folds": 3},
        "labelled samples",  # a 30-utterance fixture is not the 5531-utterance corpus
    ),
    (
        "mosi",
        mmsa,
        {"audio": "mmsa", "video": "mmsa", "text": "bert"},
        {},
        "samples in split 'train'",  # 8 of the 1284 expected
    ),
    ("mer2024", mertools, {"audio": "eGeMAPS_UTT", "video": "manet_frame"}, {}, None),
]


def params_for(dataset: str, source: Path, features: dict[str, str], options: dict) -> dict:
    return validate_params(
        {
            "seed": 3,
            "dataset": dataset,
            "device": "cpu",
            "acquire": {dataset: {"path": str(source), **options}},
            "train": {"epochs": 3, "patience": 0, "seeds": [1], "num_threads": 1},
            "models": {"fusion": {"arch": "early_fusion", "features": features}},
            "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
            "mlflow": {"experiment": "robustmer-tests"},
        }
    )


@pytest.mark.parametrize(("dataset", "build", "features", "options", "gate"), CASES)
def test_pack_runs_through_the_pipeline(
    dataset: str,
    build: Callable[[Path], Path],
    features: dict[str, str],
    options: dict,
    gate: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = params_for(dataset, build(tmp_path), features, options)
    raw, store_dir = tmp_path / "raw", tmp_path / "features"
    acquire(params, raw)
    corpus = read_json(raw / "corpus.json")
    assert corpus["kind"] == "pack" and corpus["dataset"] == dataset and corpus["licence"]
    assert all(len(fp["sha256"]) == 64 for fp in corpus["files"].values())
    extract(params, raw, store_dir)
    store = FeatureStore(store_dir)
    assert store.dataset == dataset
    assert store.info["raw_corpus"]["info"]["citation"] == dataset_info(dataset).citation
    if gate is None:
        run_gate(params, store_dir, tmp_path / "v.json", tmp_path / "docs")
    else:
        with pytest.raises(ValidationFailed, match=gate):
            run_gate(params, store_dir, tmp_path / "v.json", tmp_path / "docs")
    train_model(params, "fusion", store_dir, tmp_path / "model")
    corrupt(params, "clean", store_dir, tmp_path / "clean")
    out = eval_outputs(tmp_path / "results", "fusion", "clean")
    metrics = evaluate_model(
        params, "fusion", "clean", store_dir, tmp_path / "model", tmp_path / "clean", out
    )
    predictions = pd.read_csv(out["predictions"], dtype={"sample_id": str})
    manifest = store.manifest
    if "split" in manifest.columns and "fold" not in manifest.columns:  # official splits
        tested = set(manifest.loc[manifest["split"] == "test", "sample_id"])
    else:  # every labelled sample is tested once; the unlabelled pool never
        tested = set(manifest.loc[manifest["label"] != "", "sample_id"])
    assert set(predictions["sample_id"]) == tested and len(predictions) == len(tested)
    assert 0.0 <= metrics["levels"]["clean"]["ua"] <= 1.0


def test_a_pack_changed_after_acquire_is_refused(tmp_path: Path) -> None:
    source = mmsa(tmp_path)
    params = params_for("mosi", source, {"text": "bert"}, {})
    acquire(params, tmp_path / "raw")
    pickle_file = source / "aligned_50.pkl"
    data = bytearray(pickle_file.read_bytes())
    data[-20] ^= 0xFF
    pickle_file.write_bytes(bytes(data))
    os.utime(pickle_file, ns=(1, 1))
    with pytest.raises(DataError, match=r"aligned_50\.pkl: changed since 'mosi' was acquired"):
        extract(params, tmp_path / "raw", tmp_path / "features")
    assert not (tmp_path / "features").exists()


def test_a_copy_only_touched_after_acquire_still_converts(tmp_path: Path) -> None:
    source = mmsa(tmp_path)
    params = params_for("mosi", source, {"text": "bert"}, {})
    acquire(params, tmp_path / "raw")
    os.utime(source / "aligned_50.pkl", ns=(10**9, 10**9))
    extract(params, tmp_path / "raw", tmp_path / "features")
    assert len(FeatureStore(tmp_path / "features")) == 15
