"""RAVDESS summary tables -> canonical store: pairing, imputation, folds, and bad tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dataset_fixtures_raw import build_ravdess_tables

from robustmer.data.adapters.feature_tables import convert_ravdess_tables, files_ravdess_tables
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def convert(source: Path, out: Path, **options: Any) -> tuple[FeatureStore, dict[str, Any]]:
    result = convert_ravdess_tables(source, out, options)
    return FeatureStore(out), result


def fails(source: Path, out: Path, match: str, **options: Any) -> str:
    """convert raises a DataError matching `match` before writing anything into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError, match=match) as err:
        convert_ravdess_tables(source, out, options)
    assert list(out.iterdir()) == []
    return str(err.value)


def edit(path: Path, change: Any) -> None:
    """Rewrite a table through `change(frame) -> frame`."""
    change(pd.read_csv(path)).to_csv(path, index=False)


def test_tables_pair_on_the_name_without_modality(tmp_path: Path) -> None:
    src = build_ravdess_tables(tmp_path / "src")  # video rows reversed, other modality prefix
    store, result = convert(src, tmp_path / "out", n_folds=2)
    m = store.manifest
    assert len(store) == 16 and list(m["sample_id"]) == sorted(m["sample_id"])
    assert store.classes == ["neutral", "happy", "sad", "angry"]  # code order, only present ones
    assert set(m.columns) >= {"sample_id", "speaker", "label", "text", "source", "fold"}
    assert (m["text"] == "").all() and (m["source"] == "ravdess_features").all()
    row = m.set_index("sample_id").loc["01-04-02-01-01-02"]  # actor 2, sad: table row 4 + 2
    assert (row["speaker"], row["label"], row["intensity"], row["gender"]) == (
        "actor_02",
        "sad",
        "strong",
        "female",
    )
    i = int(np.flatnonzero(m["sample_id"] == "01-04-02-01-01-02")[0])
    audio, video = store.utterance_matrix("audio/summary"), store.utterance_matrix("video/summary")
    assert audio[i].tolist() == [60.0, 61.0, 62.0, 63.0]  # written as row 6 of the audio table
    assert video[i].tolist() == [60.5, 61.5, 62.5]  # the same clip, listed elsewhere in video
    assert store.meta("audio/summary").feature_names == ["a0_mean", "a1_mean", "a2_mean", "a3_mean"]
    assert store.meta("video/summary").level == "utterance"
    assert result["dims"] == {"audio/summary": 4, "video/summary": 3}
    assert store.info["adapter"] == "ravdess_tables" and store.info["n_folds"] == 2


def test_tables_impute_nan_with_column_median(tmp_path: Path) -> None:
    src = build_ravdess_tables(tmp_path / "src", nan_cells=((0, 1), (2, 1), (5, 0)))
    store, result = convert(src, tmp_path / "out", n_folds=2)
    audio = store.utterance_matrix("audio/summary")
    assert not np.isnan(audio).any()
    col1 = [i * 10.0 + 1 for i in range(16) if i not in (0, 2)]
    rows = {sid: i for i, sid in enumerate(store.manifest["sample_id"])}
    first = rows["01-01-01-01-01-01"]  # audio table row 0
    assert audio[first, 1] == pytest.approx(np.median(col1))
    params = store.meta("audio/summary").params
    assert params["imputed"] == {"a0_mean": 1, "a1_mean": 2} and "label" in params["imputation"]
    assert result["imputed"] == {"audio/summary": 3, "video/summary": 0}


def test_tables_drop_an_all_nan_column(tmp_path: Path) -> None:
    src = build_ravdess_tables(tmp_path / "src", all_nan_column=True)
    store, _ = convert(src, tmp_path / "out", n_folds=2)
    meta = store.meta("audio/summary")
    assert meta.dim == 4 and "cpp_var" not in meta.feature_names
    assert meta.params["dropped_all_nan"] == ["cpp_var"]


def test_tables_folds_are_actor_independent(tmp_path: Path) -> None:
    src = build_ravdess_tables(tmp_path / "src", actors=tuple(range(1, 13)), emotions=(1, 5))
    store, _ = convert(src, tmp_path / "out")
    m = store.manifest
    assert (m.groupby("speaker")["fold"].nunique() == 1).all()
    assert sorted(m["fold"].unique()) == list(range(6))
    for _, fold in m.groupby("fold"):
        assert sorted(fold.drop_duplicates("speaker")["gender"]) == ["female", "male"]
    fails(src, tmp_path / "few", "12 speaker.*n_folds=13", n_folds=13)


def test_tables_unmatched_rows(tmp_path: Path) -> None:
    src = build_ravdess_tables(tmp_path / "src")
    edit(src / "video_summary.csv", lambda f: f.iloc[1:])  # drops actor 4's last clip
    msg = fails(src, tmp_path / "out", "only in audio_summary.csv", n_folds=2)
    assert "01-05-02-01-01-04" in msg and "inner_join" in msg
    store, result = convert(src, tmp_path / "ok", inner_join=True, n_folds=2)
    assert len(store) == 15 and store.info["unmatched"]["audio_only"] == ["01-05-02-01-01-04"]
    assert result["unmatched"] == {"audio_only": 1, "video_only": 0}


@pytest.mark.parametrize(
    ("table", "change", "match"),
    [
        ("audio_summary.csv", lambda f: f.assign(emotion=["joyful"] * len(f)), "unknown emotion"),
        ("video_summary.csv", lambda f: f.assign(emotion=f["emotion"][::-1].values), "disagrees"),
        ("audio_summary.csv", lambda f: f.assign(actor=[9] * len(f)), "actor 9 disagrees"),
        ("audio_summary.csv", lambda f: pd.concat([f, f.iloc[[3]]]), "more than once"),
        ("video_summary.csv", lambda f: f.assign(file=["clip.mp4"] * len(f)), "not named"),
        ("audio_summary.csv", lambda f: f.drop(columns=["gender"]), "lacks column"),
        ("audio_summary.csv", lambda f: f.assign(a2_mean=np.inf), "infinite"),
    ],
)
def test_tables_bad_rows_name_the_table(
    tmp_path: Path, table: str, change: Any, match: str
) -> None:
    src = build_ravdess_tables(tmp_path / "src")
    edit(src / table, change)
    msg = fails(src, tmp_path / "out", match, n_folds=2)
    assert str(src / table) in msg


def test_tables_missing_table_and_bad_option(tmp_path: Path) -> None:
    src = build_ravdess_tables(tmp_path / "src")
    assert [p.name for p in files_ravdess_tables(src, {})] == [
        "audio_summary.csv",
        "video_summary.csv",
    ]
    (src / "video_summary.csv").unlink()
    with pytest.raises(DataError, match=r"video_summary\.csv missing"):
        files_ravdess_tables(src, {})
    fails(src, tmp_path / "out", "video_summary.csv missing")
    with pytest.raises(ConfigError, match="inner_joint"):
        files_ravdess_tables(src, {"inner_joint": True})


@pytest.mark.shared_data
def test_shared_ravdess_tables(tmp_path: Path) -> None:
    source = SHARED / "ravdess"
    if not (source / "audio_summary.csv").is_file():
        pytest.skip(f"{source} is absent: the real-corpus samples live beside the project only")
    store, _ = convert(source, tmp_path / "out")
    table = pd.read_csv(source / "audio_summary.csv")
    meta_cols = {"file", "emotion", "intensity", "actor", "gender"}
    numeric = [c for c in table.columns if c not in meta_cols and table[c].dtype.kind == "f"]
    m = store.manifest
    assert len(store) == 360 and m["speaker"].nunique() == 24 and len(store.classes) == 8
    assert store.meta("audio/summary").dim == len(numeric)
    assert store.meta("video/summary").dim == 56
    assert (m.groupby("speaker")["fold"].nunique() == 1).all() and m["fold"].nunique() == 6
    for name in ("audio/summary", "video/summary"):
        assert np.isfinite(store.utterance_matrix(name)).all()
    assert store.meta("audio/summary").params["imputed"]["cpp_mean"] == 268
