"""MER2024 `attention_topn`: several features per modality, each with its own encoder, attention
over the K of them; the data layer that reads a list of features per modality; the ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import build_synthetic_store, eval_outputs, tiny_params_dict

from robustmer.config import ModelSpec, validate_params
from robustmer.data.model_data import load_model_data
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError, DataError
from robustmer.io import read_json, write_json
from robustmer.models.encoders import MLPEncoder
from robustmer.models.mer2024_attention.network import MER2024Attention
from robustmer.models.mer2024_attention_topn.network import MER2024AttentionTopN
from robustmer.models.registry import build_model, check_models
from robustmer.tuning.feature_rank import features_entry, rank_features

ROOT = Path(__file__).resolve().parents[1]
TWO_AUDIO = {
    "audio/egemaps_functionals": ("utterance", 12, 1.0),
    "audio/mel": ("frame", 6, 0.8),
    "audio/mel_mean": ("utterance", 6, 0.8),
    "text/minilm": ("utterance", 5, 0.6),
}


def spec(features: dict, **options: object) -> ModelSpec:
    return ModelSpec(name="topn", arch="mer2024_attention_topn", features=features,
                     hidden_dim=8, dropout=0.0, num_layers=2, options=dict(options))  # fmt: skip


def test_k_inputs_are_the_listed_features_each_with_its_own_encoder() -> None:
    parts = {"video": (5,), "audio": (7, 3, 4), "text": (2,)}
    model = MER2024AttentionTopN(parts, 4, hidden_dim=8, num_layers=2, dropout=0.0)
    # the reference's order: audio, text, video; each list best first
    assert [s[0] for s in model.slices] == ["audio_0", "audio_1", "audio_2", "text_0", "video_0"]
    assert [(a, b) for _, _, a, b in model.slices[:3]] == [(0, 7), (7, 10), (10, 14)]
    for key, _, a, b in model.slices:
        encoder = model.encoders[key]
        assert isinstance(encoder, MLPEncoder) and encoder.net[1].in_features == b - a
    assert model.attention_out.out_features == 5  # K = 5 raw weights
    assert model.attention_mlp.net[1].in_features == 5 * 8
    x = {m: torch.randn(3, sum(d)) for m, d in parts.items()}
    assert model(x).shape == (3, 4)
    # the weights over the K inputs are not softmaxed, as in `attention`
    weights = model.modality_weights(model.encode(x))
    assert weights.shape == (3, 5, 1) and not torch.allclose(weights.sum(1), torch.ones(3, 1))


def test_topn_keeps_the_first_n_of_each_list_and_reads_nothing_else() -> None:
    torch.manual_seed(0)
    parts = {"audio": (4, 3, 2), "video": (5,)}
    model = MER2024AttentionTopN(parts, 3, hidden_dim=8, num_layers=1, dropout=0.0, topn=2)
    assert [s[0] for s in model.slices] == ["audio_0", "audio_1", "video_0"]
    model.eval()
    x = {"audio": torch.randn(2, 9), "video": torch.randn(2, 5)}
    base = model(x)
    unused = {**x, "audio": x["audio"].clone()}
    unused["audio"][:, 7:] += 100.0  # the third audio feature: ranked out by topn 2
    assert torch.equal(model(unused), base)
    used = {**x, "audio": x["audio"].clone()}
    used["audio"][:, 4:7] += 1.0  # the second one is read
    assert not torch.allclose(model(used), base)


def test_one_feature_per_modality_is_the_attention_model() -> None:
    """With one feature per modality, top-n is `attention` (same weights, same outputs)."""
    dims = {"audio": 6, "text": 4, "video": 5}
    torch.manual_seed(3)
    plain = MER2024Attention(dims, 4, hidden_dim=8, num_layers=2, dropout=0.0)
    torch.manual_seed(3)
    topn = MER2024AttentionTopN({m: (d,) for m, d in dims.items()}, 4, 8, 2, 0.0)
    renamed = {k.replace("encoders.audio_0", "encoders.audio")
                .replace("encoders.text_0", "encoders.text")
                .replace("encoders.video_0", "encoders.video"): v
               for k, v in topn.state_dict().items()}  # fmt: skip
    plain.load_state_dict(renamed)
    x = {m: torch.randn(3, d) for m, d in dims.items()}
    plain.eval(), topn.eval()
    assert torch.allclose(plain(x), topn(x))


def test_the_registry_gives_the_part_dims_to_the_builder() -> None:
    s = spec({"audio": ("a", "b"), "text": "c"}, topn=1)
    model = build_model(s, {"audio": 9, "text": 4}, 4, parts={"audio": (5, 4), "text": (4,)})
    assert [(k, a, b) for k, _, a, b in model.slices] == [("audio_0", 0, 5), ("text_0", 0, 4)]


def test_a_list_of_features_is_read_side_by_side(tmp_path: Path) -> None:
    store = FeatureStore(build_synthetic_store(tmp_path / "s", features=TWO_AUDIO))
    s = spec({"audio": ("egemaps_functionals", "mel"), "text": "minilm"})
    data = load_model_data(store, s, frame_inputs=True)
    audio = data.inputs["audio"]
    assert audio.level == "utterance" and audio.offsets is None  # frames arrive as their mean
    assert data.part_dims == {"audio": (12, 6), "text": (5,)}
    assert data.input_dims == {"audio": 18, "text": 5}
    egemaps, mel = (store.utterance_matrix(f"audio/{n}") for n in ("egemaps_functionals", "mel"))
    np.testing.assert_allclose(audio.values[:, :12], egemaps)
    np.testing.assert_allclose(audio.values[:, 12:], mel, rtol=1e-6)
    assert data.feature_names == ["audio/egemaps_functionals", "audio/mel", "text/minilm"]
    # a one-name list is that name: the same spec, so the same checkpoints and hashes
    params = tiny_params_dict()
    params["models"]["fusion_mlp"]["features"]["audio"] = ["egemaps_functionals"]
    assert ModelSpec.from_params(params, "fusion_mlp").features["audio"] == "egemaps_functionals"


def test_a_listed_feature_the_store_lacks_is_named(tmp_path: Path) -> None:
    store = FeatureStore(build_synthetic_store(tmp_path / "s", features=TWO_AUDIO))
    s = spec({"audio": ("egemaps_functionals", "hubert", "wav2vec")})
    with pytest.raises(DataError, match=r"model 'topn' reads audio/hubert, audio/wav2vec, "
                       r"which the store lacks .*extract"):  # fmt: skip
        load_model_data(store, s, frame_inputs=False)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"options": {"topn": -1}}, "options.topn"),
        ({"options": {"topn": 1.5}}, "options.topn"),
        ({"options": {"k": 2}}, "unknown mer2024_attention_topn options"),
        ({"features": {"audio": []}}, "features"),
        ({"features": {"audio": ["a", "a"]}}, "features"),
    ],
)
def test_bad_topn_entries_are_refused(entry: dict, message: str) -> None:
    raw = tiny_params_dict()
    raw["models"] = {"topn": {"arch": "mer2024_attention_topn",
                              "features": {"audio": ["a", "b"]}, **entry}}  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        check_models(validate_params(raw))


def test_ranking_reads_single_feature_models_best_first(tmp_path: Path) -> None:
    def summary(model: str, features: list[str], uas: list[float]) -> Path:
        path = tmp_path / model / "train_summary.json"
        folds = [{"val": {"val_ua": ua, "val_loss": 1.0}} for ua in uas]
        write_json(path, {"model": model, "features": features, "folds": folds})
        return path

    files = [
        summary("mel_mlp", ["audio/mel"], [0.5, 0.7]),  # 0.6
        summary("egemaps_mlp", ["audio/egemaps_functionals"], [0.7, 0.7]),  # 0.7
        summary("egemaps_linear", ["audio/egemaps_functionals"], [0.5, 0.5]),  # worse: not kept
        summary("text_mlp", ["text/minilm"], [0.4, 0.4]),
        summary("fusion", ["audio/mel", "text/minilm"], [0.9, 0.9]),  # not unimodal
    ]
    ranking = rank_features(files, "ua")
    assert [(r.feature, r.model) for r in ranking["audio"]] == [
        ("audio/egemaps_functionals", "egemaps_mlp"), ("audio/mel", "mel_mlp")]  # fmt: skip
    assert ranking["audio"][1].score == pytest.approx(0.6)
    assert features_entry(ranking) == {"audio": ["egemaps_functionals", "mel"], "text": ["minilm"]}
    loss_first = rank_features(files, "loss")  # lower is better: ties broken by name
    assert [r.feature for r in loss_first["audio"]] == ["audio/egemaps_functionals", "audio/mel"]
    with pytest.raises(DataError, match="no validation 'wa'"):
        rank_features(files, "wa")


@pytest.fixture(scope="module")
def builtin_two_audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The built-in corpus (6 speakers x 28 utterances) with two audio extractors only."""
    from robustmer.data.builtin.generate import generate_corpus
    from robustmer.features.extract import extract

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["acquire"]["builtin"].update(n_speakers=6, utterances_per_speaker=28, n_folds=3,
                                     unlabelled_fraction=0.0)  # fmt: skip
    raw["extract"].update(workers=2, video={}, text={}, audio={
        "egemaps": {"kind": "opensmile", "feature_set": "eGeMAPSv02"},
        "mel": {"kind": "logmel"},
    })  # fmt: skip
    raw["train"].update(epochs=40, patience=12, seeds=[1], batch_size=16, lr=0.003)
    raw["models"] = {
        "topn": {"arch": "mer2024_attention_topn", "hidden_dim": 64, "dropout": 0.2,
                 "features": {"audio": ["egemaps_functionals", "mel"]}},
    }  # fmt: skip
    raw["corrupt"]["conditions"] = {"clean": {"kind": "clean"}}
    params = validate_params(raw)
    root = tmp_path_factory.mktemp("topn")
    generate_corpus(root / "raw", params["acquire"]["builtin"], seed=5, workers=2)
    extract(params, root / "raw", root / "features")
    return params, root


def _train_and_score(
    params: dict, model: str, store: Path, root: Path, conditions: tuple[str, ...]
) -> dict:
    from robustmer.corruption.condition_store import corrupt
    from robustmer.evaluation.runner import evaluate_model
    from robustmer.training.runner import train_model

    train_model(params, model, store, root / model)
    metrics = {}
    for condition in conditions:
        corrupt(params, condition, store, root / "conditions" / condition)
        metrics[condition] = evaluate_model(
            params, model, condition, store, root / model, root / "conditions" / condition,
            eval_outputs(root / "eval", model, condition),
        )  # fmt: skip
    return metrics


def test_topn_learns_on_the_builtin_corpus_with_two_audio_extractors(
    builtin_two_audio: tuple[dict, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """eGeMAPS functionals and log-mel means, each with its own encoder: the loss falls and the
    fusion beats chance clearly (alone, each scores about 0.40 / 0.35 UA on this sample)."""
    import mlflow

    params, root = builtin_two_audio
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    metrics = _train_and_score(params, "topn", root / "features", root, ("clean",))
    summary = read_json(root / "topn" / "train_summary.json")
    assert summary["features"] == ["audio/egemaps_functionals", "audio/mel"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    for row in summary["folds"]:
        history = client.get_metric_history(row["mlflow_run_id"], "train_loss")
        losses = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert min(losses[-5:]) < 0.7 * losses[0], losses  # the loss falls
    (clean,) = metrics["clean"]["levels"].values()
    assert clean["ua"] > 0.45, clean  # 4 classes: chance is 0.25


def test_rank_features_cli_prints_the_ranked_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from robustmer.cli import app

    raw = tiny_params_dict()
    raw["models"] = {
        "mel_mlp": {"arch": "early_fusion", "features": {"audio": "mel"}},
        "egemaps_mlp": {"arch": "early_fusion", "features": {"audio": "egemaps_functionals"}},
        "never_trained": {"arch": "early_fusion", "features": {"text": "minilm"}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    for model, ua in (("mel_mlp", 0.5), ("egemaps_mlp", 0.6)):
        feature = raw["models"][model]["features"]["audio"]
        write_json(Path("models/builtin") / model / "train_summary.json",
                   {"model": model, "features": [f"audio/{feature}"],
                    "folds": [{"val": {"val_ua": ua}}]})  # fmt: skip
    result = CliRunner().invoke(app, ["rank-features"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["audio", "1.", "audio/egemaps_functionals"]
    assert lines[1].split()[:3] == ["audio", "2.", "audio/mel"]
    assert yaml.safe_load("\n".join(lines[2:])) == {
        "features": {"audio": ["egemaps_functionals", "mel"]}}  # fmt: skip


def test_topn_is_scored_under_every_missing_pattern(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three modalities, two features for video: every pattern with a modality kept."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    raw = tiny_params_dict(seeds=[1])
    raw["models"] = {"topn": {
        "arch": "mer2024_attention_topn", "hidden_dim": 32, "dropout": 0.1,
        "features": {"audio": "egemaps_functionals", "video": ["face_hog_mean", "face_hog"],
                     "text": "minilm"},
        "train_corruption": {"kind": "missing_rate", "rate": 0.3},
    }}  # fmt: skip
    raw["corrupt"] = {"conditions": {"clean": {"kind": "clean"},
                                     "missing_pattern": {"kind": "missing_pattern"}}}  # fmt: skip
    params = validate_params(raw)
    metrics = _train_and_score(params, "topn", tiny_store, tmp_path, ("clean", "missing_pattern"))
    (clean,) = metrics["clean"]["levels"].values()
    assert clean["ua"] > 0.6, clean
    patterns = metrics["missing_pattern"]["levels"]
    assert len(patterns) == 6
    for name, level in patterns.items():
        assert level["ua"] > 0.3, (name, level)  # any one modality still carries the class
