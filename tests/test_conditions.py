"""Evaluation conditions: records per kind, the corrupt stage, raw media re-extraction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustmer import MODALITIES
from robustmer.config import ModelSpec, validate_params
from robustmer.corruption import masks
from robustmer.corruption.condition_store import ConditionStore, corrupt
from robustmer.corruption.conditions import Condition, build_records, present_matrix
from robustmer.corruption.training import TrainingCorruption
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError, DataError
from robustmer.models.missing import forward, zero_missing


def params_with(conditions: dict, **extra: object) -> dict:
    return validate_params(
        {
            "seed": 11,
            "dataset": "builtin",
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
            "corrupt": {"conditions": conditions},
            **extra,
        }
    )


def manifest(n: int = 300) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [f"s{i:04d}" for i in range(n)]})


def records(kind: dict, n: int = 300, seed: int = 11) -> pd.DataFrame:
    params = params_with({"c": kind})
    return build_records(Condition.from_params(params, "c"), manifest(n), seed)


def test_missing_rate_is_drawn_over_the_modalities_the_dataset_has() -> None:
    from robustmer.corruption.conditions import level_summary

    params = params_with({"c": {"kind": "missing_rate", "levels": [0.3, 0.7]}})
    cond = Condition.from_params(params, "c")
    # All three: exactly the draws of the default call.
    pd.testing.assert_frame_equal(
        build_records(cond, manifest(500), 11, MODALITIES), build_records(cond, manifest(500), 11)
    )
    with pytest.warns(UserWarning, match="cap for 2 modalities"):
        rec = build_records(cond, manifest(3000), 11, ["audio", "video"])
    summary = level_summary(rec, ["audio", "video"])
    low = present_matrix(rec[rec["level"] == "0.3"])
    assert low[:, 2].all()  # text: absent from the dataset, nothing to withhold
    assert low[:, :2].any(axis=1).all()  # audio or video always kept
    assert summary["0.3"]["achieved_missing_rate"] == pytest.approx(0.3, abs=0.02)
    assert summary["0.7"]["achieved_missing_rate"] == pytest.approx(0.5)  # the cap for M = 2
    with pytest.warns(UserWarning, match="cap for 1 modalities"):
        alone = build_records(cond, manifest(50), 11, ["audio"])
    assert present_matrix(alone).all()  # one modality: it cannot go missing


def test_missing_rate_levels_are_achieved_and_keep_a_modality() -> None:
    rec = records({"kind": "missing_rate", "levels": [0.0, 0.2, 0.5, 0.7]}, n=3000)
    for level, target in (("0", 0.0), ("0.2", 0.2), ("0.5", 0.5), ("0.7", 2 / 3)):
        present = present_matrix(rec[rec["level"] == level])
        assert len(present) == 3000
        assert present.sum(axis=1).min() >= 1
        assert abs((1 - present.mean()) - target) < 0.015, level


def test_same_seed_same_records_other_seed_other_masks() -> None:
    kind = {"kind": "missing_rate", "levels": [0.4]}
    a, b, c = records(kind), records(kind), records(kind, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(present_matrix(a), present_matrix(c))
    assert a["seed"].is_unique  # every row has its own seed


def test_missing_pattern_expands_the_set_once_per_pattern() -> None:
    rec = records({"kind": "missing_pattern"}, n=10)
    assert list(dict.fromkeys(rec["level"])) == list(masks.SIX_PATTERNS)
    for name, pattern in masks.SIX_PATTERNS.items():
        part = rec[rec["level"] == name]
        assert list(part["sample_index"]) == list(range(10))
        assert (present_matrix(part) == np.asarray(pattern)).all()
    assert not present_matrix(rec).all(axis=1).any()  # never all three


def test_imder_schedule_is_constant_within_a_batch() -> None:
    rec = records({"kind": "imder_schedule", "levels": [0.3], "batch_size": 10}, n=400)
    present = present_matrix(rec)
    batches = present.reshape(40, 10, 3)
    assert (batches == batches[:, :1]).all()
    kept = batches[:, 0].sum(axis=1)
    assert (kept == 1).sum() == 12 and (kept == 2).sum() == 12 and (kept == 3).sum() == 16


def test_feature_noise_draws_a_timestep_per_row_and_modality() -> None:
    rec = records(
        {
            "kind": "feature_noise",
            "levels": [20, 100],
            "noise": "impulse",
            "modalities": ["audio", "text"],
        }
    )
    for level, steps in (("20", 20), ("100", 100)):
        part = rec[rec["level"] == level]
        assert (part["num_steps"] == steps).all() and (part["noise_kind"] == "impulse").all()
        for m in ("audio", "text"):
            assert part[f"t_{m}"].between(0, steps - 1).all()
        assert (part["t_video"] == -1).all()
        assert present_matrix(part).all()


def test_feature_noise_patterns_noise_exactly_the_missing_modalities_of_each_pattern() -> None:
    rec = records({"kind": "feature_noise", "levels": [40], "patterns": True}, n=7)
    assert len(rec) == 7 * 6
    assert list(rec["sample_index"]) == list(np.repeat(np.arange(7), 6))
    assert present_matrix(rec).all()  # replaced by noise, not withheld
    noised = rec[[f"t_{m}" for m in MODALITIES]].to_numpy() >= 0
    expected = ~np.tile(np.asarray(list(masks.SIX_PATTERNS.values())), (7, 1))
    assert (noised == expected).all()
    assert rec[[f"t_{m}" for m in MODALITIES]].max().max() <= 39
    assert (rec["num_steps"] == 40).all() and rec["seed"].is_unique


def test_mer_noise_draws_snr_and_blur_per_clip() -> None:
    rec = records({"kind": "mer_noise"}, n=600)
    assert set(rec["snr_db"].unique()) == set(range(5, 11))
    assert set(rec["blur_rate"].unique()) == {1, 2, 4}
    assert rec["level"].nunique() == 1


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ({"kind": "missing_rate"}, "needs `levels`"),
        ({"kind": "video_blur", "levels": [3]}, "powers of two"),
        ({"kind": "audio_noise", "noise": "folder", "levels": [5]}, "noise_folder"),
        ({"kind": "imder_schedule", "levels": [0.25]}, "0.0, 0.1, ..., 0.7"),
        ({"kind": "feature_noise", "noise": "pink", "levels": [20]}, "not one of"),
        ({"kind": "text_word_drop", "levels": [1.0]}, r"\[0, 1\)"),
    ],
)
def test_bad_condition_settings_are_config_errors(kind: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        records(kind, n=20)


def test_unknown_condition_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*known: c"):
        Condition.from_params(params_with({"c": {"kind": "clean"}}), "nope")


def test_corrupt_writes_records_and_a_summary(tiny_store: Path, tmp_path: Path) -> None:
    params = params_with({"mr": {"kind": "missing_rate", "levels": [0.0, 0.3]}})
    out = corrupt(params, "mr", tiny_store, tmp_path / "mr")
    cond = ConditionStore(out)
    assert cond.levels == ["0", "0.3"] and cond.kind == "missing_rate"
    assert len(cond.level_records("0.3")) == len(FeatureStore(tiny_store).manifest)
    info = json.loads((out / "condition.json").read_text())
    assert 0.2 < info["summary"]["0.3"]["achieved_missing_rate"] < 0.4
    assert info["summary"]["0.3"]["min_modalities_kept"] >= 1
    assert cond.overlay("0.3") is None
    cond.check_store(FeatureStore(tiny_store))


def test_raw_condition_without_media_fails_and_keeps_the_old_folder(
    tiny_store: Path, tmp_path: Path
) -> None:
    good = params_with({"a": {"kind": "missing_rate", "levels": [0.1]}})
    corrupt(good, "a", tiny_store, tmp_path / "a")
    before = (tmp_path / "a" / "records.parquet").read_bytes()
    raw = params_with({"a": {"kind": "audio_noise", "noise": "white", "levels": [5]}})
    with pytest.raises(DataError, match="no raw media to corrupt"):
        corrupt(raw, "a", tiny_store, tmp_path / "a")
    assert (tmp_path / "a" / "records.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no half-written folder


def test_training_corruption_missing_rate_keeps_a_modality() -> None:
    spec = ModelSpec("m", "early_fusion", {"audio": "x", "text": "y"}, 8, 0.0, 1,
                     {"kind": "missing_rate", "rate": 0.3})  # fmt: skip
    corr = TrainingCorruption.from_spec(spec, ["audio", "text"], seed=3)
    assert corr is not None
    inputs = {"audio": torch.ones(500, 4), "text": torch.ones(500, 2)}
    _, present = corr(inputs)
    assert present is not None and set(present) == {"audio", "text"}
    kept = present["audio"].int() + present["text"].int()
    assert kept.min() >= 1 and 0.25 < 1 - kept.float().mean() / 2 < 0.35
    _, again = TrainingCorruption.from_spec(spec, ["audio", "text"], seed=3)(inputs)
    assert torch.equal(again["audio"], present["audio"])  # its own seeded stream


def test_training_corruption_noise_and_pattern_rules() -> None:
    noisy = {"kind": "feature_noise", "probability": 1.0, "schedule": "nmer", "noise": "gaussian",
             "num_steps": 100}  # fmt: skip
    corr = TrainingCorruption(noisy, ["audio", "video", "text"], seed=1)
    inputs = {m: torch.ones(8, 3) for m in MODALITIES}
    out, present = corr(inputs)
    assert present is None and all(not torch.equal(out[m], inputs[m]) for m in MODALITIES)
    with pytest.raises(ConfigError, match="missing_pattern needs a model with audio, video"):
        TrainingCorruption({"kind": "missing_pattern"}, ["audio", "text"], seed=1)
    spec = ModelSpec("m", "early_fusion", {"audio": "x"}, 8, 0.0, 1, {"kind": "none"})
    assert TrainingCorruption.from_spec(spec, ["audio"], seed=1) is None


class _Recorder(torch.nn.Module):
    handles_missing = True

    def forward(self, inputs, lengths=None, present=None):  # type: ignore[no-untyped-def]
        self.present = present
        return inputs["audio"]


def test_missing_modalities_reach_models_as_zeros_or_as_a_mask() -> None:
    x = {"audio": torch.ones(3, 2), "video": torch.ones(3, 4, 2)}
    present = {"audio": torch.tensor([True, False, True]), "video": torch.tensor([False] * 3)}
    zeroed = zero_missing(x, present)
    assert zeroed["audio"][:, 0].tolist() == [1.0, 0.0, 1.0]
    assert zeroed["video"].abs().sum() == 0 and x["video"].abs().sum() == 24  # input untouched
    model = _Recorder()
    forward(model, x, None, present)
    assert model.present is present  # a model that handles missing inputs gets the mask itself


# Real media: a tiny built-in corpus, extracted once, then raw-noise conditions.
@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from robustmer.data.builtin import generate_corpus
    from robustmer.features.extract import extract

    params = params_with(
        {
            "snr": {"kind": "audio_noise", "noise": "white", "levels": [0]},
            "blur": {"kind": "video_blur", "levels": [1, 4]},
            "words": {"kind": "text_word_drop", "levels": [0.6]},
            "mer": {"kind": "mer_noise"},
        },
        acquire={"builtin": {"n_speakers": 2, "utterances_per_speaker": 4, "n_folds": 2}},
        extract={"workers": 1},
    )
    params["corrupt"]["workers"] = 1
    root = tmp_path_factory.mktemp("real")
    generate_corpus(root / "raw", params["acquire"]["builtin"], seed=5, workers=1)
    extract(params, root / "raw", root / "features")
    return params, root


def test_raw_noise_reextracts_only_the_corrupted_modality(real_store: tuple[dict, Path]) -> None:
    params, root = real_store
    clean = FeatureStore(root / "features")
    snr = ConditionStore(corrupt(params, "snr", root / "features", root / "c" / "snr"))
    overlay = snr.overlay("0")
    assert overlay is not None
    assert overlay.feature_names() == ["audio/egemaps_functionals", "audio/egemaps_lld"]
    noisy = overlay.utterance_matrix("audio/egemaps_functionals")
    assert noisy.shape == clean.utterance_matrix("audio/egemaps_functionals").shape
    assert not np.allclose(noisy, clean.utterance_matrix("audio/egemaps_functionals"))

    blur = ConditionStore(corrupt(params, "blur", root / "features", root / "c" / "blur"))
    same, blurred = blur.overlay("1"), blur.overlay("4")
    assert same is not None and blurred is not None
    name = "video/face_hog_mean"
    np.testing.assert_array_equal(same.utterance_matrix(name), clean.utterance_matrix(name))
    assert not np.allclose(blurred.utterance_matrix(name), clean.utterance_matrix(name))

    words = ConditionStore(corrupt(params, "words", root / "features", root / "c" / "words"))
    text = words.overlay("0.6")
    assert text is not None and text.feature_names() == ["text/minilm"]
    assert not np.allclose(text.utterance_matrix("text/minilm"),
                           clean.utterance_matrix("text/minilm"))  # fmt: skip

    mer = ConditionStore(corrupt(params, "mer", root / "features", root / "c" / "mer"))
    (level,) = mer.levels
    both = mer.overlay(level)
    assert both is not None and {"audio/egemaps_lld", "video/face_hog"} <= set(both.feature_names())


def test_raw_noise_leaves_the_unlabelled_pool_clean_and_the_scored_rows_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool is never scored, so it is not corrupted; each record's own seed keeps the noise
    of the labelled rows what it was when every row was corrupted."""
    from robustmer.corruption import raw_stage
    from robustmer.data.builtin import generate_corpus
    from robustmer.features.extract import extract

    params = params_with(
        {"snr": {"kind": "audio_noise", "noise": "babble", "levels": [0]},
         "words": {"kind": "text_word_drop", "levels": [0.6]}},
        acquire={"builtin": {"n_speakers": 2, "utterances_per_speaker": 4, "n_folds": 2,
                             "unlabelled_fraction": 0.5}},
        extract={"workers": 1},
    )  # fmt: skip
    params["corrupt"]["workers"] = 1
    generate_corpus(tmp_path / "raw", params["acquire"]["builtin"], seed=5, workers=1)
    extract(params, tmp_path / "raw", tmp_path / "features")
    clean = FeatureStore(tmp_path / "features")
    pool = (clean.manifest["label"].fillna("") == "").to_numpy()
    assert pool.sum() == 4 and (~pool).sum() == 4
    for name, level, feature in (("snr", "0", "audio/egemaps_functionals"),
                                 ("words", "0.6", "text/minilm")):  # fmt: skip
        store = ConditionStore(corrupt(params, name, tmp_path / "features", tmp_path / name))
        with monkeypatch.context() as patch:  # as before: every row corrupted
            patch.setattr(raw_stage, "_scored", lambda rec, _: np.ones(len(rec), bool))
            every = ConditionStore(corrupt(params, name, tmp_path / "features", tmp_path / "all"))
        noisy, before = (s.overlay(level).utterance_matrix(feature) for s in (store, every))
        plain = clean.utterance_matrix(feature)
        np.testing.assert_array_equal(noisy[pool], plain[pool])
        assert not np.allclose(noisy[~pool], plain[~pool])
        np.testing.assert_allclose(noisy[~pool], before[~pool], rtol=0, atol=1e-5)
        assert not np.allclose(before[pool], plain[pool])  # the old way did corrupt the pool
        shutil.rmtree(tmp_path / "all")
