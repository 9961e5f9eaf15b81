"""An official test set outside the cross-validation (MERTools protocol): kept out of every fold
and of the pool, predicted by the mean of the fold models' logits, scored where it is labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import eval_outputs
from dataset_fixtures_packs import build_mertools_layout
from test_pack_adapters import convert_into, expect_failure

from robustmer.config import ModelSpec, TrainConfig, validate_params
from robustmer.corruption.condition_store import corrupt
from robustmer.data.acquire import acquire
from robustmer.data.adapters.mertools import convert_mertools
from robustmer.data.model_data import FoldTensors, data_folds, load_model_data, official_test
from robustmer.data.store import FeatureStore
from robustmer.evaluation.report import write_report
from robustmer.evaluation.runner import _load_fold, evaluate_model
from robustmer.features.extract import extract
from robustmer.models.missing import forward
from robustmer.training.runner import train_model
from robustmer.validation.gate import run_gate

# Pool names of the fixture that become the official test set: labelled, and one without a label.
TEST_LABELS = {"samplenew_00000000": "happy", "samplenew_00000001": "Sad"}
TEST_UNLABELLED = "samplenew_00000002"


def write_test_csv(root: Path, unlabelled: bool = True) -> None:
    rows = [*TEST_LABELS.items(), *([(TEST_UNLABELLED, "")] if unlabelled else [])]
    pd.DataFrame(rows, columns=["name", "discrete"]).to_csv(root / "test.csv", index=False)


def test_the_adapter_keeps_the_test_set_out_of_the_cv_and_the_pool(tmp_path: Path) -> None:
    mer = build_mertools_layout(tmp_path / "mer")
    write_test_csv(mer.root)
    store = convert_into(convert_mertools, mer.root, tmp_path / "store", test="test.csv")
    m = store.manifest.set_index("sample_id")
    official = [*TEST_LABELS, TEST_UNLABELLED]
    assert (m.loc[official, "split"] == "test").all() and (m.loc[official, "fold"] == -1).all()
    assert m.loc["samplenew_00000000", "label"] == "happy"
    assert m.loc["samplenew_00000001", "label"] == "sad"  # lower-cased like the training CSV
    assert m.loc[TEST_UNLABELLED, "label"] == ""
    pool = sorted(set(mer.unlabelled) - set(official))
    assert sorted(m.index[m["split"] == "unlabelled"]) == pool
    assert (m.loc[list(mer.labelled), "split"] == "train").all()
    protocol = pd.read_parquet(tmp_path / "store" / "protocol.parquet")
    assert not set(protocol["sample_id"]) & set(official)
    assert store.info["official_test"] == 3 and store.info["unlabelled"] == len(pool) + 1

    # A test set without a label column is predicted only.
    pd.DataFrame({"name": official}).to_csv(mer.root / "names.csv", index=False)
    names_only = convert_into(convert_mertools, mer.root, tmp_path / "names", test="names.csv")
    assert (names_only.manifest.set_index("sample_id").loc[official, "label"] == "").all()


def test_bad_official_test_csvs_name_the_file_and_the_fix(tmp_path: Path) -> None:
    mer = build_mertools_layout(tmp_path / "mer")
    expect_failure(convert_mertools, mer.root, tmp_path / "a", "absent.csv", "option `test`",
                   test="absent.csv")  # fmt: skip
    first = next(iter(mer.labelled))
    pd.DataFrame({"name": [first], "discrete": ["happy"]}).to_csv(mer.root / "t.csv", index=False)
    expect_failure(convert_mertools, mer.root, tmp_path / "b", "t.csv", first,
                   "also in the training labels", test="t.csv")  # fmt: skip
    pd.DataFrame({"name": ["samplenew_00000000"], "discrete": ["bored"]}).to_csv(
        mer.root / "u.csv", index=False
    )
    expect_failure(convert_mertools, mer.root, tmp_path / "c", "u.csv", "'bored'", test="u.csv")
    pd.DataFrame({"name": ["no_such_sample"]}).to_csv(mer.root / "v.csv", index=False)
    expect_failure(convert_mertools, mer.root, tmp_path / "d", "no_such_sample.npy",
                   test="v.csv")  # fmt: skip


def test_fold_models_vote_on_the_official_test_set_by_their_mean_logits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mer = build_mertools_layout(tmp_path / "pack", n_labelled=30, n_unlabelled=6)
    write_test_csv(mer.root)
    features = {"audio": "eGeMAPS_UTT", "video": "manet_frame"}
    params = validate_params(
        {
            "seed": 3,
            "dataset": "mer2024",
            "device": "cpu",
            "acquire": {"mer2024": {"path": str(mer.root), "test": "test.csv"}},
            "train": {"epochs": 3, "patience": 0, "seeds": [1, 2], "num_threads": 1},
            "models": {"fusion": {"arch": "early_fusion", "features": features}},
            "corrupt": {"conditions": {"clean": {"kind": "clean"}}},
            "mlflow": {"experiment": "robustmer-tests"},
        }
    )
    store_dir, model_dir = tmp_path / "features", tmp_path / "model"
    acquire(params, tmp_path / "raw")
    extract(params, tmp_path / "raw", store_dir)
    run_gate(params, store_dir, tmp_path / "v.json", tmp_path / "docs")  # the stage passes
    store = FeatureStore(store_dir)
    spec = ModelSpec.from_params(params, "fusion")
    data = load_model_data(store, spec, frame_inputs=False)
    official = official_test(data)
    ids = data.manifest["sample_id"].to_numpy()
    assert sorted(ids[official]) == sorted([*TEST_LABELS, TEST_UNLABELLED])
    folds = data_folds(data, 1, 3)
    assert len(folds) == 5
    for split in folds:  # no fold learns from, picks epochs on, tests or pools a test row
        used = np.concatenate([split.train, split.val, split.test, split.unlabelled])
        assert not np.isin(official, used).any()

    train_model(params, "fusion", store_dir, model_dir)
    corrupt(params, "clean", store_dir, tmp_path / "clean")
    out = eval_outputs(tmp_path / "results", "fusion", "clean")
    metrics = evaluate_model(params, "fusion", "clean", store_dir, model_dir, tmp_path / "clean",
                             out)  # fmt: skip
    level = metrics["levels"]["clean"]
    assert metrics["n_folds"] == 5 and 0.0 <= level["test_ua"] <= 1.0 and "test_ua_std" in level

    predictions = pd.read_csv(out["predictions"], dtype={"sample_id": str}, keep_default_na=False)
    ensemble = predictions[predictions["fold"] == -1]
    assert sorted(set(ensemble["sample_id"])) == sorted(ids[official])
    assert len(ensemble) == 2 * len(official)  # per seed
    assert ensemble.set_index("sample_id").loc[TEST_UNLABELLED, "actual"].tolist() == ["", ""]
    cv = predictions[predictions["fold"] >= 0]
    assert not set(cv["sample_id"]) & set(ids[official])

    # The ensemble is softmax(mean over fold models of logits), recomputed here per seed.
    cfg = TrainConfig.from_params(params, spec)
    probs = [f"prob_{c}" for c in data.classes]
    rows = official
    for seed in cfg.seeds:
        logits = []
        for split in folds:
            model, normaliser = _load_fold(model_dir, spec, data, split, seed)
            model.eval()
            inputs, lengths, _ = FoldTensors(data, normaliser, torch.device("cpu")).batch(rows)
            with torch.no_grad():
                logits.append(forward(model, inputs, lengths, None).double())
        want = torch.softmax(torch.stack(logits).mean(0), 1).numpy()
        mean_prob = torch.stack([torch.softmax(z, 1) for z in logits]).mean(0).numpy()
        got = ensemble[ensemble["seed"] == seed].set_index("sample_id").loc[ids[official], probs]
        np.testing.assert_allclose(got.to_numpy(), want, atol=2e-6)
        assert not np.allclose(want, mean_prob, atol=1e-4)  # logits, not probabilities, averaged

    scores = pd.read_csv(out["scores"], dtype={"fold": str})
    official_rows = scores[scores["fold"] == "test"]
    assert sorted(official_rows["seed"].unique()) == [1, 2]
    ua = official_rows[official_rows["metric"] == "ua"]["value"]
    assert level["test_ua"] == pytest.approx(ua.mean())

    report = write_report(params, [out["scores"]], tmp_path / "report")
    text = (report / "summary.md").read_text()
    assert "Official test set (mean of the fold models' logits" in text
    summary = pd.read_csv(report / "summary.csv")
    ua_row = summary[summary["metric"] == "ua"].iloc[0]
    assert ua_row["n"] == 5 * 2  # fold rows only: neither pooled nor official-test rows
    assert ua_row["test_mean"] == pytest.approx(ua.mean())
