"""Dataset protocols: speaker folds, official splits, explicit per-fold roles, unlabelled pools."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustmer.config import ModelSpec
from robustmer.corruption.condition_store import corrupt
from robustmer.data.model_data import (
    ModelData,
    data_folds,
    encode_labels,
    load_model_data,
    official_test,
)
from robustmer.data.store import FeatureStore
from robustmer.errors import DataError
from robustmer.evaluation.runner import evaluate_model
from robustmer.io import atomic_path
from robustmer.training.runner import train_model


def model_data(manifest: pd.DataFrame, labels: list[int], roles: pd.DataFrame | None = None):
    return ModelData({}, np.asarray(labels), manifest, ["a", "b"], roles)


def test_official_splits_are_one_fold_and_skip_unlabelled_rows() -> None:
    manifest = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(7)],
            "speaker": ["x", "x", "y", "y", "z", "z", "z"],
            "split": ["train", "train", "valid", "test", "test", "unlabelled", "train"],
        }
    )
    (fold,) = data_folds(model_data(manifest, [0, 1, 0, 1, 0, -1, 1]), 1, 0)
    assert fold.fold == 0
    assert fold.train.tolist() == [0, 1, 6]
    assert fold.val.tolist() == [2] and fold.test.tolist() == [3, 4]
    assert fold.test_speakers == ["y", "z"]


def test_split_protocol_needs_train_and_test_rows() -> None:
    manifest = pd.DataFrame(
        {"sample_id": ["a", "b"], "speaker": ["x", "y"], "split": ["train"] * 2}
    )
    with pytest.raises(DataError, match="no 'test' rows"):
        data_folds(model_data(manifest, [0, 1]), 1, 0)
    manifest["split"] = ["train", "dev"]
    with pytest.raises(DataError, match=r"\['dev'\]"):
        data_folds(model_data(manifest, [0, 1]), 1, 0)


def test_role_table_wins_and_is_checked() -> None:
    manifest = pd.DataFrame(
        {"sample_id": list("abcdef"), "speaker": list("ppqqrr"), "fold": [1, 1, 2, 2, -1, -1]}
    )
    roles = pd.DataFrame(
        {
            "sample_id": list("abcd") + list("abcd"),
            "fold": [1] * 4 + [2] * 4,
            "role": ["test", "test", "train", "val", "train", "val", "test", "test"],
        }
    )
    folds = data_folds(model_data(manifest, [0, 1, 0, 1, 0, -1], roles), 1, 0)
    assert [f.fold for f in folds] == [1, 2]
    assert folds[0].test.tolist() == [0, 1] and folds[0].train.tolist() == [2]
    assert folds[1].val.tolist() == [1] and folds[1].test.tolist() == [2, 3]
    bad = roles.copy()
    bad.loc[0, "sample_id"] = "zz"
    with pytest.raises(DataError, match="names sample 'zz'"):
        data_folds(model_data(manifest, [0, 1, 0, 1, 0, -1], bad), 1, 0)
    unlabelled = roles.copy()
    unlabelled.loc[0, "sample_id"] = "f"
    with pytest.raises(DataError, match="role to an unlabelled or official test sample"):
        data_folds(model_data(manifest, [0, 1, 0, 1, 0, -1], unlabelled), 1, 0)
    # A labelled official test row (split "test" beside the roles) is in no role and no pool;
    # an unlabelled one is not pooled either.
    official = manifest.assign(split=["train"] * 4 + ["test", "test"])
    assert official_test(model_data(official, [0, 1, 0, 1, 0, -1], roles)).tolist() == [4, 5]
    folds = data_folds(model_data(official, [0, 1, 0, 1, 0, -1], roles), 1, 0)
    assert all(f.unlabelled.tolist() == [] for f in folds)
    in_role = roles.copy()
    in_role.loc[2, "sample_id"] = "e"
    with pytest.raises(DataError, match="role to an unlabelled or official test sample"):
        data_folds(model_data(official, [0, 1, 0, 1, 0, -1], in_role), 1, 0)
    # Where the official splits are the protocol, fold 0 tests them: no ensemble set.
    assert official_test(model_data(official.drop(columns="fold"), [0] * 6)).tolist() == []


def test_empty_label_is_unlabelled_only_where_the_store_declares_a_pool() -> None:
    manifest = pd.DataFrame({"sample_id": ["a", "b"], "label": ["happy", ""]})
    assert encode_labels(manifest, ["happy"], "m", allow_unlabelled=True).tolist() == [0, -1]
    with pytest.raises(DataError, match="sample 'b' has label ''"):
        encode_labels(manifest, ["happy"], "m")


def _rewrite_manifest(store: Path, manifest: pd.DataFrame, **info: object) -> None:
    from robustmer.io import read_json, write_json

    with atomic_path(store / "manifest.parquet", suffix=".parquet") as tmp:
        manifest.to_parquet(tmp, index=False)
    write_json(store / "store.json", {**read_json(store / "store.json"), **info})


@pytest.fixture(scope="module")
def split_store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny store with official splits by speaker and one speaker as an unlabelled pool."""
    root = tmp_path_factory.mktemp("split") / "store"
    shutil.copytree(tiny_store, root)
    manifest = FeatureStore(root).manifest.drop(columns=["fold"])
    split = {"spk00": "test", "spk01": "valid", "spk05": "unlabelled"}
    manifest["split"] = manifest["speaker"].map(split).fillna("train")
    manifest.loc[manifest["split"] == "unlabelled", "label"] = ""
    _rewrite_manifest(root, manifest, unlabelled=int((manifest["label"] == "").sum()))
    return root


def test_training_and_evaluation_follow_the_split_protocol(
    split_store: Path, tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import eval_outputs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = {**tiny_params, "train": {**tiny_params["train"], "seeds": [1]}}
    spec = ModelSpec.from_params(params, "fusion_mlp")
    data = load_model_data(FeatureStore(split_store), spec, frame_inputs=False)
    assert (data.labels == -1).sum() == 20
    train_model(params, "fusion_mlp", split_store, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").rglob("fold_*.pt")) == ["fold_0.pt"]
    corrupt(params, "clean", split_store, tmp_path / "clean")
    out = eval_outputs(tmp_path / "results", "fusion_mlp", "clean")
    metrics = evaluate_model(
        params, "fusion_mlp", "clean", split_store, tmp_path / "m", tmp_path / "clean", out
    )
    predictions = pd.read_csv(out["predictions"])
    assert set(predictions["speaker"]) == {"spk00"}  # only the test split is scored
    assert len(predictions) == 20
    assert metrics["levels"]["clean"]["ua"] > 0.5  # learnable: chance is 0.25
