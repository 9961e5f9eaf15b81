"""Feature-pack adapters (MMIN HDF5, MMSA pickle, MERTools .npy) -> canonical store."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dataset_fixtures_packs import (
    MMIN_CLASSES,
    MMSA_SPLITS,
    build_mertools_layout,
    build_mmin_pack,
    build_mmsa_pickle,
    mmsa_data,
)

from robustmer.data.adapters.mertools import convert_mertools, files_mertools, modality_of
from robustmer.data.adapters.mmin import convert_mmin, files_mmin, speaker_of
from robustmer.data.adapters.mmsa import convert_mmsa, files_mmsa
from robustmer.data.adapters.mmsa import speaker_of as mmsa_speaker
from robustmer.data.store import FeatureStore
from robustmer.errors import DataError
from robustmer.io import atomic_dir

Convert = Callable[[Path, Path, Mapping[str, Any]], dict[str, Any]]


def convert_into(convert: Convert, source: Path, target: Path, **options: Any) -> FeatureStore:
    """Convert as acquire does: into a temp dir swapped in only on success."""
    with atomic_dir(target) as tmp:
        convert(source, tmp, options)
    return FeatureStore(target)


def expect_failure(
    convert: Convert, source: Path, target: Path, *fragments: str, **options: Any
) -> str:
    """The conversion raises DataError naming every fragment, and leaves no target behind."""
    with pytest.raises(DataError) as info, atomic_dir(target) as tmp:
        convert(source, tmp, options)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    return message


def stored(store: FeatureStore, name: str) -> dict[str, np.ndarray]:
    ids = store.manifest["sample_id"].tolist()
    return dict(zip(ids, store.sequences(name), strict=True))


# --- MMIN --------------------------------------------------------------------------------------


@pytest.fixture
def mmin(tmp_path: Path):
    return build_mmin_pack(tmp_path / "pack")


def test_mmin_values_labels_and_speakers_match_the_pack(mmin, tmp_path: Path) -> None:
    store = convert_into(convert_mmin, mmin.root, tmp_path / "store", dims=mmin.dims)
    m = store.manifest
    assert m["sample_id"].tolist() == mmin.names
    assert dict(zip(m["sample_id"], m["label"], strict=True)) == mmin.labels
    assert dict(zip(m["sample_id"], m["speaker"], strict=True)) == mmin.speakers
    assert set(m["source"]) == {"iemocap"} and set(m["text"]) == {""}
    assert store.classes == list(MMIN_CLASSES)
    names = {"audio": "audio/comparE", "video": "video/denseface", "text": "text/bert_large"}
    assert store.feature_names() == sorted(names.values())
    for modality, name in names.items():
        got = stored(store, name)
        assert store.meta(name).level == "frame"
        assert store.meta(name).dim == mmin.dims[modality]
        for utt, arr in mmin.features[modality].items():
            np.testing.assert_array_equal(got[utt], arr)  # video: group/feat layout
    assert len(stored(store, "text/bert_large")[mmin.names[0]]) == 0


def test_mmin_folds_and_protocol_roles(mmin, tmp_path: Path) -> None:
    store = convert_into(convert_mmin, mmin.root, tmp_path / "store")
    m = store.manifest
    assert m["fold"].dtype == np.int64
    for fold, roles in mmin.folds.items():
        assert set(m.loc[m["fold"] == fold, "sample_id"]) == set(roles["test"])
    protocol = pd.read_parquet(tmp_path / "store" / "protocol.parquet")
    assert protocol["fold"].dtype == np.int64
    assert set(protocol["role"]) == {"train", "val", "test"}
    for fold, roles in mmin.folds.items():
        part = protocol[protocol["fold"] == fold]
        for role, members in roles.items():
            assert sorted(part.loc[part["role"] == role, "sample_id"]) == sorted(members)
    assert store.info["n_folds"] == 3


def test_mmin_normalisation_stats_are_copied(mmin, tmp_path: Path) -> None:
    store = convert_into(convert_mmin, mmin.root, tmp_path / "store")
    with np.load(tmp_path / "store" / "normalisation" / "audio.npz") as npz:
        np.testing.assert_array_equal(npz["mean"], mmin.mean)
        np.testing.assert_array_equal(npz["std"], mmin.std)
        assert npz["folds"].tolist() == [1, 2, 3]
    info = store.info["normalisation"]["audio"]
    assert info["source"] == "A/comparE_mean_std.h5" and info["folds"] == [1, 2, 3]
    assert set(info["train_mean_gap"]) == {"1", "2", "3"}
    assert list(store.info["normalisation"]) == ["audio"]  # no stats shipped for video/text


def test_mmin_summary_counts_short_sequences(mmin, tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "store") as tmp:
        summary = convert_mmin(mmin.root, tmp, {})
    lengths = [len(a) for a in mmin.features["text"].values()]
    text = summary["features"]["text/bert_large"]
    assert text["empty"] == 1
    assert text["shorter_than_5"] == sum(t < 5 for t in lengths)


def test_mmin_accepts_index_labels_and_flat_names(tmp_path: Path) -> None:
    pack = build_mmin_pack(tmp_path / "pack", int_labels=True, flat_names=True)
    store = convert_into(convert_mmin, pack.root, tmp_path / "store")
    assert dict(zip(store.manifest["sample_id"], store.manifest["label"], strict=True)) == (
        pack.labels
    )


def test_speaker_parsing() -> None:
    assert speaker_of("Ses01F_impro01_F000") == "Ses01F"
    assert speaker_of("Ses01F_impro01_M003") == "Ses01M"
    assert speaker_of("Ses05M_script02_2_F014") == "Ses05F"
    assert speaker_of("MSP-IMPROV-S01A-F01-P-FM01") == "F01"
    assert speaker_of("MSP-IMPROV-S03H-M03-R-MF05") == "M03"
    assert speaker_of("spk7_utt003") == "spk7"
    assert speaker_of("abc-12", r"^(\w+)-") == "abc"
    with pytest.raises(DataError, match="speaker_pattern"):
        speaker_of("abc", r"^(\d+)")
    assert mmsa_speaker("03bSnISJMiM$_$1") == "03bSnISJMiM"
    assert mmsa_speaker("-3g5yACwYnA_10") == "-3g5yACwYnA"
    assert mmsa_speaker("plain") == "plain"


def test_mmin_files_lists_everything_and_names_missing(mmin) -> None:
    files = files_mmin(mmin.root, {})
    rel = {p.relative_to(mmin.root).as_posix() for p in files}
    assert {"A/comparE.h5", "V/denseface.h5", "L/bert_large.h5", "A/comparE_mean_std.h5"} <= rel
    assert "target/3/tst_int2name.npy" in rel and len(rel) == 4 + 3 * 6
    (mmin.root / "target" / "2" / "val_label.npy").unlink()
    with pytest.raises(DataError, match=r"target/2/val_label\.npy"):
        files_mmin(mmin.root, {})


def test_mmin_truncated_hdf5(mmin, tmp_path: Path) -> None:
    path = mmin.root / "L" / "bert_large.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_failure(convert_mmin, mmin.root, tmp_path / "store", "bert_large.h5", "incomplete")


def test_mmin_wrong_dims(mmin, tmp_path: Path) -> None:
    dims = {**mmin.dims, "video": 342}
    expect_failure(
        convert_mmin, mmin.root, tmp_path / "store", "denseface.h5", mmin.names[0], dims=dims
    )


def test_mmin_name_missing_from_hdf5(mmin, tmp_path: Path) -> None:
    import h5py

    gone = mmin.names[4]
    with h5py.File(mmin.root / "A" / "comparE.h5", "a") as h5:
        del h5[gone]
    expect_failure(convert_mmin, mmin.root, tmp_path / "store", "comparE.h5", gone)


def test_mmin_class_count_must_match_one_hot_width(mmin, tmp_path: Path) -> None:
    expect_failure(
        convert_mmin, mmin.root, tmp_path / "store", "trn_label.npy", "classes",
        classes=["ang", "hap", "neu"],
    )  # fmt: skip


def test_mmin_expected_folds(mmin, tmp_path: Path) -> None:
    expect_failure(convert_mmin, mmin.root, tmp_path / "store", "10", expected_folds=10)


def test_mmin_overlapping_roles_in_a_fold(mmin, tmp_path: Path) -> None:
    base = mmin.root / "target" / "1"
    names = np.load(base / "trn_int2name.npy")
    test_names = np.load(base / "tst_int2name.npy")
    names[0] = test_names[0]
    np.save(base / "trn_int2name.npy", names)
    expect_failure(convert_mmin, mmin.root, tmp_path / "store", "target/1", "leakage")


# --- MMSA --------------------------------------------------------------------------------------


@pytest.fixture
def mosi(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "MOSI" / "Processed" / "aligned_50.pkl"
    return path, build_mmsa_pickle(path)


def _cut(part: dict[str, Any], key: str, len_key: str | None) -> list[np.ndarray]:
    arr = part[key]
    if len_key is None or len_key not in part:
        return list(arr)
    return [a[: min(int(n), arr.shape[1])] for a, n in zip(arr, part[len_key], strict=True)]


def test_mmsa_values_splits_and_labels(mosi, tmp_path: Path) -> None:
    path, data = mosi
    store = convert_into(convert_mmsa, path, tmp_path / "store", dims={"audio": 5, "video": 20})
    m = store.manifest
    ids = [i for s in MMSA_SPLITS for i in data[s]["id"]]
    assert m["sample_id"].tolist() == ids
    assert m["split"].tolist() == [s for s in MMSA_SPLITS for _ in data[s]["id"]]
    reg = np.concatenate([data[s]["regression_labels"] for s in MMSA_SPLITS]).astype(np.float64)
    assert m["regression"].dtype == np.float64
    np.testing.assert_array_equal(m["regression"], reg)
    expected = np.where(reg < 0, "negative", np.where(reg > 0, "positive", "neutral"))
    assert m["label"].tolist() == expected.tolist() and "neutral" in set(m["label"])
    assert store.classes == ["negative", "neutral", "positive"]
    assert m["text"].tolist() == [t for s in MMSA_SPLITS for t in data[s]["raw_text"]]
    assert m["speaker"].iloc[1] == "vid1" and m["speaker"].iloc[0] == "old0_clip"
    assert store.info["splits"] == {"train": 8, "valid": 3, "test": 4}

    audio = [a for s in MMSA_SPLITS for a in _cut(data[s], "audio", "audio_lengths")]
    video = [a for s in MMSA_SPLITS for a in _cut(data[s], "vision", "vision_lengths")]
    text = [a for s in MMSA_SPLITS for a in _cut(data[s], "text", None)]
    for name, source in (("audio/mmsa", audio), ("video/mmsa", video), ("text/bert", text)):
        got = store.sequences(name)
        assert len(got) == len(ids)
        for g, want in zip(got, source, strict=True):
            np.testing.assert_array_equal(g, np.where(np.isneginf(want), 0, want))
    assert len(store.sequence("audio/mmsa", 0)) == 50  # length 57 > 50: all kept
    assert store.sequence("audio/mmsa", 0)[0, 0] == 0.0  # was -inf
    assert np.isfinite(store.values("audio/mmsa")).all()
    assert store.meta("audio/mmsa").params["neg_inf_set_to_zero"] == 6  # 2 per split


def test_mmsa_without_lengths_keeps_all_frames_and_folder_source(tmp_path: Path) -> None:
    path = tmp_path / "mosei" / "unaligned.pkl"
    build_mmsa_pickle(path, lengths=False, dims=(7, 4, 6), seq=12)
    store = convert_into(convert_mmsa, path.parent, tmp_path / "store", file="unaligned.pkl")
    assert set(np.diff(store.offsets("video/mmsa")).tolist()) == {12}
    assert files_mmsa(path.parent, {"file": "unaligned.pkl"}) == [path]
    with pytest.raises(DataError, match=r"aligned_50\.pkl"):
        files_mmsa(path.parent, {})


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_mmsa_pickle_with_forbidden_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "aligned_50.pkl"
    data = mmsa_data()
    data["train"]["annotations"] = _Payload(marker)
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    expect_failure(convert_mmsa, path, tmp_path / "store", "aligned_50.pkl")
    assert not marker.exists()


def test_mmsa_duplicate_ids(tmp_path: Path) -> None:
    data = mmsa_data()
    data["test"]["id"][1] = data["train"]["id"][2]
    path = tmp_path / "aligned_50.pkl"
    build_mmsa_pickle(path, data)
    expect_failure(convert_mmsa, path, tmp_path / "store", "aligned_50.pkl", data["test"]["id"][1])


def test_mmsa_nan_names_split_and_sample(tmp_path: Path) -> None:
    data = mmsa_data()
    data["valid"]["vision"][2, 0, 3] = np.nan
    data["valid"]["vision_lengths"][2] = 10
    path = tmp_path / "aligned_50.pkl"
    build_mmsa_pickle(path, data)
    expect_failure(convert_mmsa, path, tmp_path / "store", "valid", data["valid"]["id"][2])


def test_mmsa_regression_outside_range(tmp_path: Path) -> None:
    data = mmsa_data()
    data["train"]["regression_labels"][3] = 3.5
    path = tmp_path / "aligned_50.pkl"
    build_mmsa_pickle(path, data)
    expect_failure(convert_mmsa, path, tmp_path / "store", "[-3, 3]", data["train"]["id"][3])


def test_mmsa_wrong_dims_and_count_mismatch(mosi, tmp_path: Path) -> None:
    path, data = mosi
    expect_failure(convert_mmsa, path, tmp_path / "s1", "audio", "74", dims={"audio": 74})
    data["valid"]["vision"] = data["valid"]["vision"][:-1]
    build_mmsa_pickle(path, data)
    expect_failure(convert_mmsa, path, tmp_path / "s2", "valid/vision", "2 samples")
    data["valid"]["vision"] = np.zeros((3, 50, 20), dtype=np.float32)
    data["test"]["regression_labels"] = data["test"]["regression_labels"][:2]
    build_mmsa_pickle(path, data)
    expect_failure(convert_mmsa, path, tmp_path / "s3", "test/regression", "2 samples")


def test_mmsa_missing_split(tmp_path: Path) -> None:
    data = mmsa_data()
    del data["valid"]
    path = tmp_path / "aligned_50.pkl"
    build_mmsa_pickle(path, data)
    expect_failure(convert_mmsa, path, tmp_path / "store", "valid")


# --- MERTools ----------------------------------------------------------------------------------


@pytest.fixture
def mer(tmp_path: Path):
    return build_mertools_layout(tmp_path / "mer")


def test_mertools_values_labels_and_pool(mer, tmp_path: Path) -> None:
    store = convert_into(convert_mertools, mer.root, tmp_path / "store")
    m = store.manifest.set_index("sample_id")
    assert sorted(m.index) == sorted([*mer.labelled, *mer.unlabelled])  # partial one skipped
    for name, label in mer.labelled.items():
        assert m.loc[name, "label"] == label and m.loc[name, "fold"] >= 0
    for name in mer.unlabelled:
        assert m.loc[name, "label"] == "" and m.loc[name, "fold"] == -1
    assert (m.index == m["speaker"]).all()
    for name, v in mer.valence.items():
        assert (np.isnan(v) and np.isnan(m.loc[name, "valence"])) or m.loc[name, "valence"] == v
    assert m.loc[mer.unlabelled[-1], "text"] == ""
    assert m.loc[mer.unlabelled[0], "text"] == mer.text[mer.unlabelled[0]]
    assert store.info["unlabelled"] == len(mer.unlabelled)
    assert store.info["skipped_incomplete"] == 1
    assert store.classes == ["neutral", "angry", "happy", "sad", "worried", "surprise"]

    assert store.feature_names() == ["audio/eGeMAPS_UTT", "video/manet_frame"]
    assert store.meta("audio/eGeMAPS_UTT").level == "utterance"
    assert store.meta("video/manet_frame").level == "frame"
    for d, name in (("eGeMAPS_UTT", "audio/eGeMAPS_UTT"), ("manet_frame", "video/manet_frame")):
        got = stored(store, name)
        for sample in m.index:
            want = mer.features[d][sample].astype(np.float32)
            np.testing.assert_array_equal(got[sample], want.reshape(-1, want.shape[-1]))


def test_mertools_protocol_is_seeded_five_fold_cv(mer, tmp_path: Path) -> None:
    store = convert_into(convert_mertools, mer.root, tmp_path / "store")
    protocol = pd.read_parquet(tmp_path / "store" / "protocol.parquet")
    labelled = sorted(mer.labelled)
    assert set(protocol["sample_id"]) == set(labelled)  # the pool is in no role
    assert protocol["fold"].dtype == np.int64 and sorted(set(protocol["fold"])) == [0, 1, 2, 3, 4]
    tests = protocol[protocol["role"] == "test"]
    assert sorted(tests["sample_id"]) == labelled  # each labelled sample tested exactly once
    m = store.manifest.set_index("sample_id")
    for k in range(5):
        part = protocol[protocol["fold"] == k]
        assert len(part) == len(labelled)
        test_k = set(part.loc[part["role"] == "test", "sample_id"])
        assert test_k == set(m.index[m["fold"] == k])
        val_k = set(part.loc[part["role"] == "val", "sample_id"])
        assert val_k == set(m.index[m["fold"] == (k + 1) % 5])
    again = convert_into(convert_mertools, mer.root, tmp_path / "again")
    other = convert_into(convert_mertools, mer.root, tmp_path / "other", seed=1)
    assert again.manifest["fold"].tolist() == store.manifest["fold"].tolist()
    assert other.manifest["fold"].tolist() != store.manifest["fold"].tolist()


def test_mertools_options(mer, tmp_path: Path) -> None:
    store = convert_into(
        convert_mertools,
        mer.root,
        tmp_path / "store",
        keep_unlabelled=False,
        features={"manet_frame": "video"},
        n_folds=4,
        dataset="mer2023",
    )
    assert set(store.manifest["label"]) - {""} and "" not in set(store.manifest["label"])
    assert store.feature_names() == ["video/manet_frame"]
    assert store.info["unlabelled"] == 0 and store.info["n_folds"] == 4
    assert set(store.manifest["source"]) == {"mer2023"}


def test_mertools_modality_heuristics(mer, tmp_path: Path) -> None:
    assert modality_of("chinese-hubert-base-UTT") == "audio"
    assert modality_of("eGeMAPS_noisesnrmix_UTT") == "audio"
    assert modality_of("clip-vit-large-patch14-UTT") == "video"
    assert modality_of("chinese-roberta-wwm-ext-large-UTT") == "text"
    assert modality_of("Baichuan-13B-Base-UTT") == "text"
    assert modality_of("mystery_UTT") is None
    (mer.root / "features" / "mystery_UTT").mkdir()
    expect_failure(convert_mertools, mer.root, tmp_path / "store", "mystery_UTT", "features:")


def test_mertools_files_lists_every_npy(mer) -> None:
    files = files_mertools(mer.root, {})
    n = len(mer.labelled) + len(mer.unlabelled)
    assert len(files) == 2 + 2 * n
    assert files[0].name == "label-disdim.csv" and files[1].name == "transcription-merge.csv"
    assert all(p.is_file() for p in files)


def test_mertools_unknown_label(mer, tmp_path: Path) -> None:
    csv = mer.root / "label-disdim.csv"
    table = pd.read_csv(csv)
    table.loc[3, "discrete"] = "contempt"
    table.to_csv(csv, index=False)
    expect_failure(
        convert_mertools, mer.root, tmp_path / "store", "label-disdim.csv", "row 5", "contempt"
    )


def test_mertools_duplicate_names(mer, tmp_path: Path) -> None:
    csv = mer.root / "label-disdim.csv"
    table = pd.read_csv(csv)
    pd.concat([table, table.iloc[[2]]]).to_csv(csv, index=False)
    expect_failure(convert_mertools, mer.root, tmp_path / "store", "label-disdim.csv", "twice")


def test_mertools_missing_npy(mer, tmp_path: Path) -> None:
    gone = sorted(mer.labelled)[7]
    (mer.root / "features" / "manet_frame" / f"{gone}.npy").unlink()
    (mer.root / "features" / "manet_frame" / f"{sorted(mer.labelled)[9]}.npy").unlink()
    expect_failure(
        convert_mertools, mer.root, tmp_path / "store", "manet_frame", f"{gone}.npy", "2 labelled"
    )


def test_every_odd_file_is_named_against_the_majority_shape(mer, tmp_path: Path) -> None:
    """The first file sorted is odd too: the folder's shape is the majority's, not the first's."""
    names = sorted(mer.labelled)
    odd = [names[0], names[3], names[8]]
    for name in odd:
        np.save(mer.root / "features" / "eGeMAPS_UTT" / f"{name}.npy", np.zeros(9, np.float32))
    message = expect_failure(
        convert_mertools, mer.root, tmp_path / "store", *(f"{n}.npy (9,)" for n in odd),
        "shape [6]", "3 of",
    )  # fmt: skip
    assert f"{names[1]}.npy" not in message
    for name in names:  # most files [1, 2, 3]: not a feature folder at all
        np.save(mer.root / "features" / "eGeMAPS_UTT" / f"{name}.npy", np.zeros((1, 2, 3)))
    expect_failure(convert_mertools, mer.root, tmp_path / "s2", "eGeMAPS_UTT", "expected [D]")


def test_mertools_inconsistent_shape(mer, tmp_path: Path) -> None:
    bad = sorted(mer.labelled)[5]
    np.save(mer.root / "features" / "eGeMAPS_UTT" / f"{bad}.npy", np.zeros(9, dtype=np.float32))
    expect_failure(convert_mertools, mer.root, tmp_path / "store", f"{bad}.npy", "same shape")
    np.save(mer.root / "features" / "eGeMAPS_UTT" / f"{bad}.npy", np.zeros(6, dtype=np.float32))
    frames = mer.root / "features" / "manet_frame" / f"{bad}.npy"
    frames.write_bytes(frames.read_bytes()[:-8])  # truncated
    expect_failure(convert_mertools, mer.root, tmp_path / "s2", f"{bad}.npy")
