"""The validate stage: a valid store passes; each kind of bad data fails, naming what is wrong.

Bad stores are made by rewriting files of a valid one directly (StoreWriter refuses most of
these states), which is also how such damage arises in practice: an interrupted or hand-edited
store, or a broken extractor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from robustmer.data.store import FeatureMeta, FeatureStore, StoreWriter
from robustmer.errors import DataError, ValidationFailed
from robustmer.io import read_json, write_json
from robustmer.validation.gate import run_gate
from robustmer.validation.tables import build_tables, stat_column

CLASSES = ["neutral", "happy", "angry", "sad"]
N = 12
UTT = "audio/functionals"  # utterance-level, dim 4
FRAMES = "video/frames"  # frame-level, dim 3, 1-3 frames per sample
PARAMS: dict[str, Any] = {
    "dataset": "tiny",
    "validate": {"max_abs_value": 1.0e6, "min_samples_per_class": 2},
}


def _manifest() -> pd.DataFrame:
    # 4 speakers, each in one fold; every class 3 times.
    return pd.DataFrame(
        {
            "sample_id": [f"s{i:03d}" for i in range(N)],
            "speaker": [f"spk{i % 4}" for i in range(N)],
            "label": [CLASSES[(i // 4 + i) % 4] for i in range(N)],
            "text": [f"utterance {i}" for i in range(N)],
            "source": ["tiny"] * N,
            "fold": [(i % 4) // 2 for i in range(N)],
        }
    )


def make_store(root: Path, manifest: pd.DataFrame | None = None) -> Path:
    """A valid tiny store: one utterance-level and one frame-level feature."""
    rng = np.random.default_rng(0)
    writer = StoreWriter(root, "tiny", CLASSES)
    writer.write_manifest(_manifest() if manifest is None else manifest)
    utt = [rng.normal(size=(1, 4)).astype(np.float32) for _ in range(N)]
    writer.add_feature(FeatureMeta("audio", "functionals", "utterance", 4), utt)
    frames = [rng.normal(size=(i % 3 + 1, 3)).astype(np.float32) for i in range(N)]
    writer.add_feature(FeatureMeta("video", "frames", "frame", 3, frame_rate=25.0), frames)
    writer.finalize()
    return root


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "store")


def _gate(tmp_path: Path, store_dir: Path, params: dict[str, Any] = PARAMS) -> dict[str, Any]:
    return run_gate(params, store_dir, tmp_path / "out" / "summary.json", tmp_path / "out" / "docs")


def _fails(tmp_path: Path, store_dir: Path, params: dict[str, Any] = PARAMS) -> tuple[str, dict]:
    """Run the gate expecting failure; return the message and the summary it wrote."""
    with pytest.raises(ValidationFailed) as info:
        _gate(tmp_path, store_dir, params)
    summary = read_json(tmp_path / "out" / "summary.json")
    assert summary["success"] is False
    assert summary["n_failed"] == len(summary["failures"]) >= 1
    assert str(store_dir) in str(info.value)
    return str(info.value), summary


def _edit_values(store_dir: Path, name: str, edit: Callable[[np.ndarray], None]) -> None:
    path = store_dir / "features" / f"{name}.values.npy"
    values = np.load(path)
    edit(values)
    np.save(path, values)


def _edit_manifest(store_dir: Path, edit: Callable[[pd.DataFrame], None]) -> None:
    path = store_dir / "manifest.parquet"
    manifest = pd.read_parquet(path)
    edit(manifest)
    manifest.to_parquet(path, index=False)


def _checks(summary: dict[str, Any]) -> list[str]:
    return [f["check"] for f in summary["failures"]]


# --- the tables (no GX) -----------------------------------------------------------------------


def test_tables_summarise_ragged_arrays(store: Path) -> None:
    _edit_values(store, FRAMES, lambda v: v.__setitem__((4, 1), np.inf))  # sample 2, frame 1
    tables = build_tables(FeatureStore(store))
    samples = tables.samples.set_index("sample_id")
    assert samples[stat_column(FRAMES, "n_frames")].tolist() == [i % 3 + 1 for i in range(N)]
    assert samples[stat_column(UTT, "n_frames")].eq(1).all()
    nonfinite = samples[stat_column(FRAMES, "n_nonfinite")]
    assert nonfinite["s002"] == 1 and nonfinite.drop("s002").eq(0).all()
    # max_abs ignores the inf (reported as non-finite) and matches a direct computation.
    frames = FeatureStore(store).sequences(FRAMES)
    expected = [np.abs(np.where(np.isfinite(f), f, 0)).max() for f in frames]
    np.testing.assert_allclose(samples[stat_column(FRAMES, "max_abs")], expected, rtol=1e-6)
    assert tables.features.set_index("feature").loc[FRAMES, "offsets_valid"]
    assert tables.speakers is not None and tables.speakers["n_folds"].eq(1).all()
    assert tables.classes.set_index("label")["n_samples"].to_dict() == dict.fromkeys(CLASSES, 3)


def test_tables_handle_empty_sequences(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "tiny", CLASSES)
    writer.write_manifest(_manifest().head(4))
    seqs = [np.ones((2, 2)), np.zeros((0, 2)), np.zeros((0, 2)), np.full((1, 2), np.nan)]
    writer.add_feature(FeatureMeta("video", "frames", "frame", 2), seqs)
    writer.finalize()
    samples = build_tables(FeatureStore(tmp_path)).samples
    assert samples[stat_column(FRAMES, "n_frames")].tolist() == [2, 0, 0, 1]
    assert samples[stat_column(FRAMES, "n_nonfinite")].tolist() == [0, 0, 0, 2]
    assert samples[stat_column(FRAMES, "max_abs")].tolist() == [1.0, 0.0, 0.0, 0.0]


# --- the gate -----------------------------------------------------------------------------------


def test_valid_store_passes_and_writes_summary_and_docs(tmp_path: Path, store: Path) -> None:
    result = _gate(tmp_path, store)
    summary = read_json(tmp_path / "out" / "summary.json")
    assert result == summary
    assert summary["success"] is True
    assert summary["n_failed"] == 0 and summary["failures"] == []
    assert summary["n_samples"] == N and summary["dataset"] == "tiny"
    assert summary["n_expectations"] >= 20
    assert set(summary["tables"]) == {"samples", "features", "classes", "speakers"}
    docs = tmp_path / "out" / "docs"
    assert (docs / "index.html").is_file()
    index = (docs / "index.html").read_text()
    for table in ("samples", "features", "classes", "speakers"):
        assert f"tiny_store-{table}.html" in index
    # A rerun replaces the site (no pages of earlier runs pile up) and leaves no temp folders.
    _gate(tmp_path, store)
    assert len(list(docs.glob("validations/**/*.html"))) == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["docs", "summary.json"]
    assert not (Path.cwd() / "gx").exists()


def test_duplicate_sample_id(tmp_path: Path, store: Path) -> None:
    _edit_manifest(
        store, lambda m: m.__setitem__("sample_id", m["sample_id"].replace("s007", "s003"))
    )
    message, summary = _fails(tmp_path, store)
    assert "sample ids are unique" in message and "s003" in message
    assert "remove the duplicate" in message
    (failure,) = summary["failures"]
    assert failure["table"] == "samples" and failure["column"] == "sample_id"
    assert failure["n_unexpected"] == 2 and failure["samples"] == ["s003", "s003"]


def test_label_outside_declared_classes(tmp_path: Path, store: Path) -> None:
    _edit_manifest(store, lambda m: m.loc.__setitem__((5, "label"), "bored"))
    message, summary = _fails(tmp_path, store)
    assert "labels are declared classes" in message and "s005" in message and "bored" in message
    assert "fix the label in the source metadata" in message
    failure = summary["failures"][0]
    assert failure["column"] == "label" and failure["samples"] == ["s005"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_feature_values(tmp_path: Path, store: Path, bad: float) -> None:
    _edit_values(store, UTT, lambda v: v.__setitem__((7, 2), bad))
    message, summary = _fails(tmp_path, store)
    assert f"{UTT}: no NaN/inf values" in message and "s007" in message
    (failure,) = summary["failures"]
    assert failure["feature"] == UTT and failure["column"] == stat_column(UTT, "n_nonfinite")
    assert failure["samples"] == ["s007"] and failure["n_unexpected"] == 1


def test_values_above_max_abs(tmp_path: Path, store: Path) -> None:
    _edit_values(store, FRAMES, lambda v: v.__setitem__((0, 0), -5.0e7))  # sample 0
    message, summary = _fails(tmp_path, store)
    assert "max_abs_value" in message and "s000" in message
    (failure,) = summary["failures"]
    assert failure["feature"] == FRAMES and failure["samples"] == ["s000"]
    # The threshold comes from params.
    loose = {**PARAMS, "validate": {**PARAMS["validate"], "max_abs_value": 1.0e8}}
    assert _gate(tmp_path, store, loose)["success"] is True


def test_wrong_declared_dim(tmp_path: Path, store: Path) -> None:
    meta_path = store / "features" / f"{FRAMES}.json"
    write_json(meta_path, {**read_json(meta_path), "dim": 5})
    message, summary = _fails(tmp_path, store)
    assert "declared dim" in message and FRAMES in message and "re-run" in message
    (failure,) = summary["failures"]
    assert failure["table"] == "features" and failure["feature"] == FRAMES
    assert failure["rows"] == [{"feature": FRAMES, "declared_dim": 5, "actual_dim": 3}]


def test_inconsistent_offsets(tmp_path: Path, store: Path) -> None:
    path = store / "features" / f"{FRAMES}.offsets.npy"
    offsets = np.load(path)
    offsets[5], offsets[6] = offsets[6], offsets[5]  # no longer non-decreasing
    offsets[-1] += 1  # and past the end of the values
    np.save(path, offsets)
    message, summary = _fails(tmp_path, store)
    assert "offsets are non-decreasing" in message and "offsets end at" in message
    assert FRAMES in message
    assert {f["feature"] for f in summary["failures"]} == {FRAMES}


def test_offsets_of_wrong_length(tmp_path: Path, store: Path) -> None:
    path = store / "features" / f"{UTT}.offsets.npy"
    np.save(path, np.load(path)[:-1])
    message, _ = _fails(tmp_path, store)
    assert "offsets have one entry per sample plus one" in message and UTT in message


def test_missing_feature_file(tmp_path: Path, store: Path) -> None:
    (store / "features" / f"{UTT}.values.npy").unlink()
    message, summary = _fails(tmp_path, store)
    assert "feature files are readable" in message and UTT in message
    assert "No such file" in message
    # Only the readable check fails: the quantities it could not read do not cascade.
    (failure,) = summary["failures"]
    assert failure["feature"] == UTT


def test_utterance_feature_with_several_frames(tmp_path: Path, store: Path) -> None:
    # Relabel the frame-level feature as utterance-level: samples with 2-3 frames are named.
    meta_path = store / "features" / f"{FRAMES}.json"
    write_json(meta_path, {**read_json(meta_path), "level": "utterance"})
    message, summary = _fails(tmp_path, store)
    assert "exactly one frame per sample" in message
    (failure,) = summary["failures"]
    assert failure["samples"][:2] == ["s001", "s002"] and failure["n_unexpected"] == 8


def test_speaker_in_two_folds(tmp_path: Path, store: Path) -> None:
    _edit_manifest(store, lambda m: m.loc.__setitem__((5, "fold"), 1 - m.loc[5, "fold"]))
    message, summary = _fails(tmp_path, store)
    speaker = f"spk{5 % 4}"
    assert "more than one fold" in message and speaker in message and "s005" in message
    (failure,) = summary["failures"]
    assert failure["table"] == "speakers" and "s005" in failure["samples"]


def test_split_protocol_skips_fold_check(tmp_path: Path) -> None:
    manifest = _manifest().drop(columns="fold").assign(split="train")
    store_dir = make_store(tmp_path / "store", manifest)
    summary = _gate(tmp_path, store_dir)
    assert "speakers" not in summary["tables"]


def test_too_few_samples_of_a_class(tmp_path: Path, store: Path) -> None:
    strict = {**PARAMS, "validate": {**PARAMS["validate"], "min_samples_per_class": 4}}
    message, summary = _fails(tmp_path, store, strict)
    assert "min_samples_per_class (4)" in message
    (failure,) = summary["failures"]
    assert failure["table"] == "classes" and failure["n_unexpected"] == 4


def test_missing_class_and_null_speaker(tmp_path: Path, store: Path) -> None:
    def edit(m: pd.DataFrame) -> None:
        m.loc[m["label"] == "sad", "label"] = "happy"
        m.loc[2, "speaker"] = None

    _edit_manifest(store, edit)
    message, summary = _fails(tmp_path, store)
    assert "sad (n_samples=0)" in message
    assert "`speaker` is present and not null" in message and "s002" in message
    assert len(summary["failures"]) == 2


def test_missing_manifest_column(tmp_path: Path, store: Path) -> None:
    _edit_manifest(store, lambda m: m.drop(columns="source", inplace=True))
    message, summary = _fails(tmp_path, store)
    assert "`source` is present and not null" in message
    (failure,) = summary["failures"]
    assert failure["n_unexpected"] == N and failure["samples"][0] == "s000"


def test_big_tables_name_samples_from_row_positions(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above runner.NAMED_INDEX_MAX_ROWS GX reports row positions; the report maps them back.
    from robustmer.validation import runner

    monkeypatch.setattr(runner, "NAMED_INDEX_MAX_ROWS", 0)
    _edit_values(store, UTT, lambda v: v.__setitem__((9, 0), np.nan))
    _edit_manifest(store, lambda m: m.loc.__setitem__((5, "fold"), 1 - m.loc[5, "fold"]))
    message, summary = _fails(tmp_path, store)
    assert "s009" in message and "spk1" in message and "folds='0,1'" in message
    nan_failure, fold_failure = summary["failures"]
    assert nan_failure["samples"] == ["s009"]
    assert nan_failure["rows"] == [{stat_column(UTT, "n_nonfinite"): 1, "sample_id": "s009"}]
    assert "s005" in fold_failure["samples"]


def test_missing_store_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run `robustmer extract`"):
        _gate(tmp_path, tmp_path / "nowhere")


def test_summary_is_json_metric(tmp_path: Path, store: Path) -> None:
    _edit_values(store, UTT, lambda v: v.__setitem__((1, 0), np.nan))
    _fails(tmp_path, store)
    raw = json.loads((tmp_path / "out" / "summary.json").read_text())
    for key in ("success", "n_samples", "n_expectations", "n_failed", "dataset", "failures"):
        assert key in raw
    for key in ("expectation", "table", "column", "feature", "n_unexpected", "samples"):
        assert key in raw["failures"][0]
