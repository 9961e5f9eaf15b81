"""The canonical store: round trip, offsets, utterance pooling, hashes, atomic completion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustmer.data.store import FeatureMeta, FeatureStore, StoreWriter, pack_sequences
from robustmer.errors import DataError


def _manifest(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "speaker": [f"spk{i % 2}" for i in range(n)],
            "fold": [i % 2 for i in range(n)],
            "label": ["happy", "sad", "neutral"][:n] if n <= 3 else ["happy"] * n,
            "text": ["hi"] * n,
            "source": ["test"] * n,
        }
    )


def test_pack_sequences_offsets() -> None:
    seqs = [np.ones((2, 3)), np.zeros((0, 3)), np.full((4, 3), 2.0)]
    values, offsets = pack_sequences(seqs)
    assert values.shape == (6, 3) and values.dtype == np.float32
    assert offsets.tolist() == [0, 2, 2, 6]
    with pytest.raises(DataError, match="sequence 1"):
        pack_sequences([np.ones((2, 3)), np.ones((2, 4))], dim=3)


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.normal(size=(t, 5)).astype(np.float32) for t in (3, 1, 7)]
    utt = [rng.normal(size=(1, 4)).astype(np.float32) for _ in range(3)]
    writer = StoreWriter(tmp_path, "toy", ["neutral", "happy", "sad"])
    writer.write_manifest(_manifest(3))
    writer.add_feature(FeatureMeta("audio", "lld", "frame", 5, frame_rate=100.0), frames)
    writer.add_feature(FeatureMeta("text", "emb", "utterance", 4, version="v1"), utt)
    writer.finalize()

    store = FeatureStore(tmp_path)
    assert len(store) == 3 and store.classes == ["neutral", "happy", "sad"]
    assert store.feature_names() == ["audio/lld", "text/emb"]
    assert store.offsets("audio/lld").tolist() == [0, 3, 4, 11]
    for i in range(3):
        np.testing.assert_array_equal(store.sequence("audio/lld", i), frames[i])
    pooled = store.utterance_matrix("audio/lld")
    np.testing.assert_allclose(pooled, np.stack([f.mean(0) for f in frames]), rtol=1e-6)
    np.testing.assert_array_equal(store.utterance_matrix("text/emb"), np.concatenate(utt))
    meta = store.meta("audio/lld")
    assert (meta.dim, meta.level, meta.n_frames, meta.frame_rate) == (5, "frame", 11, 100.0)
    assert store.manifest["sample_id"].tolist() == ["s0", "s1", "s2"]


def test_content_hash_changes_with_data(tmp_path: Path) -> None:
    hashes = []
    for k, scale in enumerate((1.0, 1.0, 2.0)):
        root = tmp_path / str(k)
        writer = StoreWriter(root, "toy", ["happy"])
        writer.write_manifest(_manifest(4))
        writer.add_feature(FeatureMeta("audio", "f", "utterance", 2), [np.ones((1, 2)) * scale] * 4)
        writer.finalize()
        hashes.append(FeatureStore(root).content_hash())
    assert hashes[0] == hashes[1] != hashes[2]


def test_incomplete_store_is_refused(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "toy", ["happy"])
    writer.write_manifest(_manifest(2))
    writer.add_feature(FeatureMeta("audio", "f", "utterance", 2), [np.ones((1, 2))] * 2)
    with pytest.raises(DataError, match=r"store\.json"):
        FeatureStore(tmp_path)  # finalize() never ran: the store must not be used


def test_writer_rejects_inconsistent_features(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "toy", ["happy"])
    writer.write_manifest(_manifest(2))
    with pytest.raises(DataError, match="3 utterances but the manifest has 2"):
        writer.add_feature(FeatureMeta("audio", "f", "utterance", 2), [np.ones((1, 2))] * 3)
    with pytest.raises(DataError, match=r"shape \(1, 3\)"):
        writer.add_feature(FeatureMeta("audio", "f", "utterance", 2), [np.ones((1, 3))] * 2)
    with pytest.raises(DataError, match="fold"):
        writer.write_manifest(_manifest(2).drop(columns="fold"))


def test_unknown_feature_names_available(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, "toy", ["happy"])
    writer.write_manifest(_manifest(2))
    writer.add_feature(FeatureMeta("audio", "f", "utterance", 2), [np.ones((1, 2))] * 2)
    writer.finalize()
    with pytest.raises(DataError, match="available: audio/f"):
        FeatureStore(tmp_path).values("video/x")
