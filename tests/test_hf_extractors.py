"""Hugging Face extractors on tiny randomly initialised models saved to a temporary folder (no
downloads): dims, frame rates and counts, chunking, the last-layers sum checked by hand, special
tokens dropped, uniform frames and face crops, empty text, bad media and bad options."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from robustmer.config import validate_params  # noqa: E402
from robustmer.data.builtin import generate_corpus  # noqa: E402
from robustmer.errors import ConfigError  # noqa: E402
from robustmer.features.base import MediaError  # noqa: E402
from robustmer.features.faces import FaceFinder, FaceTrack, centre_box, crop  # noqa: E402
from robustmer.features.hf_image import HFImageExtractor  # noqa: E402
from robustmer.features.hf_speech import HFSpeechExtractor, chunk_spans  # noqa: E402
from robustmer.features.hf_text import HFTextExtractor  # noqa: E402
from robustmer.features.media import model_fingerprint, read_frames, uniform_indices  # noqa: E402
from robustmer.features.text import SentenceExtractor  # noqa: E402

RATE = 16000
SPEECH = ("wav2vec2", "hubert", "wavlm")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "am", "so", "very", "happy", "sad"]
VOCAB += ["the", "cat", "##s", "not", ".", "!"]


def _save_speech_models(root: Path) -> None:
    tf = transformers
    conv = {"conv_dim": (8,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2)}
    conv["conv_stride"] = (5, 2, 2, 2, 2, 2, 2)  # the real models' 320-sample hop: 50 Hz
    common = {
        "hidden_size": 16,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "vocab_size": 8,
        **conv,
    }
    models = {
        "wav2vec2": (tf.Wav2Vec2Config(**common), tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig(**common), tf.HubertModel),
        "wavlm": (tf.WavLMConfig(**common, num_buckets=16, max_bucket_distance=64), tf.WavLMModel),
    }
    for name, (config, cls) in models.items():
        torch.manual_seed(0)
        cls(config).save_pretrained(root / name)
        tf.Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True).save_pretrained(
            root / name
        )
    whisper = tf.WhisperConfig(
        d_model=16,
        encoder_layers=4,
        encoder_attention_heads=2,
        decoder_layers=1,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=16,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    tf.WhisperModel(whisper).save_pretrained(root / "whisper")
    tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper")


def _save_text_models(root: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    tf = transformers
    config = tf.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    tf.BertModel(config).save_pretrained(root / "bert")
    tf.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(root / "bert")
    model = SentenceTransformer(modules=[Transformer(str(root / "bert")), Pooling(16, "mean")])
    model.save(str(root / "sentence"))


def _save_image_models(root: Path) -> None:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tf = transformers
    vision = {
        "hidden_size": 16,
        "image_size": 32,
        "patch_size": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }
    text = {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "vocab_size": 32,
        "max_position_embeddings": 16,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    torch.manual_seed(0)
    clip = tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
    tf.CLIPModel(clip).save_pretrained(root / "clip")
    torch.manual_seed(0)
    tf.CLIPVisionModel(tf.CLIPVisionConfig(**vision)).save_pretrained(root / "clip_vision")
    for name in ("clip", "clip_vision"):
        processor.save_pretrained(root / name)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf_models")
    _save_speech_models(root)
    _save_text_models(root)
    _save_image_models(root)
    return root


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    """2.5 s of a voiced-like buzz with noise (a random model needs no real speech)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * RATE)) / RATE
    buzz = 0.3 * np.sign(np.sin(2 * np.pi * 140 * t)) * np.sin(2 * np.pi * 3 * t)
    return (buzz + 0.02 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, signal: np.ndarray) -> dict[str, Path]:
    """A 16 kHz wav, the same at 22.05 kHz, a built-in face clip (no sound), a faceless clip."""
    root = tmp_path_factory.mktemp("hf_media")
    sf.write(root / "buzz.wav", signal, RATE, subtype="FLOAT")
    from robustmer.features.media import resample

    sf.write(root / "buzz22.wav", resample(signal, RATE, 22050), 22050, subtype="FLOAT")
    params = validate_params(
        {
            "seed": 3,
            "dataset": "builtin",
            "acquire": {"builtin": {"n_speakers": 2, "utterances_per_speaker": 4, "n_folds": 2}},
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
        }
    )
    meta: pd.DataFrame = generate_corpus(
        root / "builtin", params["acquire"]["builtin"], seed=5, workers=1
    )
    noise = root / "noise.mp4"
    writer = cv2.VideoWriter(str(noise), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    rng = np.random.default_rng(1)
    for _ in range(12):
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    return {
        "wav": root / "buzz.wav",
        "wav22": root / "buzz22.wav",
        "face": root / "builtin" / meta["video_path"].iloc[0],
        "noise": noise,
    }


def _speech(models: Path, name: str, **cfg: object) -> HFSpeechExtractor:
    ext = HFSpeechExtractor(name, {"kind": "hf_speech", "model_path": str(models / name), **cfg})
    ext.setup()
    return ext


def _last_layers(hidden: tuple, layers: int = 4) -> np.ndarray:
    return sum(h[0] for h in hidden[-layers:]).numpy()


# --------------------------------------------------------------------------------------------
# Speech
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPEECH)
def test_speech_model_frames_dims_and_last_four_sum(
    models: Path, media: dict[str, Path], signal: np.ndarray, name: str
) -> None:
    ext = _speech(models, name)
    (spec,) = ext.outputs()
    assert (spec.suffix, spec.level, spec.dim, spec.frame_rate) == ("", "frame", 16, 50.0)
    (item,) = ext.extract([media["wav"]])
    frames = item[""]
    assert frames.shape == (ext.expected_frames(len(signal)), 16) == (124, 16)  # 2.5 s at 50 Hz
    model = transformers.AutoModel.from_pretrained(models / name, local_files_only=True).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(models / name, local_files_only=True)
    with torch.no_grad():
        x = fe(signal, sampling_rate=RATE, return_tensors="pt")["input_values"]
        hidden = model(x, output_hidden_states=True).hidden_states
    assert len(hidden) == 5  # embeddings + 4 layers
    np.testing.assert_allclose(frames, _last_layers(hidden), rtol=1e-4, atol=1e-4)
    (resampled,) = ext.extract([media["wav22"]])  # a 22.05 kHz file is resampled to 16 kHz
    assert resampled[""].shape == frames.shape


def test_long_signals_are_chunked_and_concatenated(models: Path, signal: np.ndarray) -> None:
    ext = _speech(models, "wav2vec2", chunk_s=1)
    frames = ext.features(signal)
    assert frames.shape[0] == ext.expected_frames(len(signal)) == 49 + 49 + 24
    whole = _speech(models, "wav2vec2")
    np.testing.assert_allclose(frames[:49], whole.features(signal[:RATE]), atol=1e-5)
    np.testing.assert_allclose(frames[49:98], whole.features(signal[RATE : 2 * RATE]), atol=1e-5)
    np.testing.assert_allclose(frames[98:], whole.features(signal[2 * RATE :]), atol=1e-5)
    # a tail shorter than one frame's 400-sample receptive field joins the chunk before it
    assert chunk_spans(2 * RATE + 100, RATE, 400) == [(0, RATE), (RATE, 2 * RATE + 100)]
    assert ext.features(signal[: 2 * RATE + 100]).shape[0] == 49 + 50
    assert ext.features(signal[:100]).shape == (1, 16)  # shorter than one frame: zero-padded


def test_whisper_encoder_keeps_only_the_frames_of_real_audio(
    models: Path, media: dict[str, Path], signal: np.ndarray
) -> None:
    ext = _speech(models, "whisper")
    (spec,) = ext.outputs()
    assert (spec.dim, spec.frame_rate) == (16, 50.0)
    (item,) = ext.extract([media["wav"]])
    assert item[""].shape == (125, 16)  # 2.5 s at 50 Hz, not the 1500 frames of 30 s
    fe = transformers.WhisperFeatureExtractor.from_pretrained(models / "whisper")
    encoder = transformers.WhisperModel.from_pretrained(models / "whisper").get_encoder().eval()
    with torch.no_grad():
        x = fe(signal, sampling_rate=RATE, return_tensors="pt")["input_features"]
        hidden = encoder(x, output_hidden_states=True).hidden_states
    assert hidden[-1].shape[1] == 1500
    np.testing.assert_allclose(item[""], _last_layers(hidden)[:125], rtol=1e-4, atol=1e-4)
    chunked = _speech(models, "whisper", chunk_s=1, layers=2)
    assert chunked.features(signal).shape == (50 + 50 + 25, 16)
    with pytest.raises(ConfigError, match=r"chunk_s = 40.*at most 30 s"):
        _speech(models, "whisper", chunk_s=40)


def test_speech_options_and_bad_media(models: Path, media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"layers = 6: the model has only 5 hidden states"):
        _speech(models, "hubert", layers=6)
    with pytest.raises(ConfigError, match=r"extract.audio.w2v: model_path is required"):
        HFSpeechExtractor("w2v", {})
    with pytest.raises(ConfigError, match=r"'facebook/wav2vec2-base' is not a local model folder"):
        HFSpeechExtractor("w2v", {"model_path": "facebook/wav2vec2-base"})
    with pytest.raises(ConfigError, match=r"holds a 'bert' model, not a speech encoder"):
        HFSpeechExtractor("w2v", {"model_path": str(models / "bert")}).setup()
    ext = _speech(models, "wavlm")
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(media["wav"].read_bytes()[:5000])
    for path, reason in [(media["face"], "no audio stream"), (truncated, "truncated")]:
        with pytest.raises(MediaError, match=rf"{path.name}: .*{reason}"):
            ext.extract([path])


def test_version_names_the_model_and_changes_with_it(models: Path, tmp_path: Path) -> None:
    copy = tmp_path / "wav2vec2"
    shutil.copytree(models / "wav2vec2", copy)
    ext = HFSpeechExtractor("w2v", {"model_path": str(copy)})
    before = ext.version()  # the stage asks before setup(): no model load needed
    assert "wav2vec2" in before and "transformers" in before
    ext.setup()
    assert ext.version() == before
    config = copy / "config.json"
    config.write_text(config.read_text().replace('"hidden_dropout": 0.1', '"hidden_dropout": 0.2'))
    model_fingerprint.cache_clear()
    assert HFSpeechExtractor("w2v", {"model_path": str(copy)}).version() != before


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def test_text_tokens_without_specials_and_last_four_sum(models: Path) -> None:
    ext = HFTextExtractor("bert", {"kind": "hf_text", "model_path": str(models / "bert")})
    assert ext.batch_size == 16
    ext.setup()
    (spec,) = ext.outputs()
    assert (spec.suffix, spec.level, spec.dim, spec.frame_rate) == ("", "frame", 16, None)
    texts = ["i am so very happy !", "", "the cats", None, "  "]
    out = [item[""] for item in ext.extract(texts)]
    assert [len(o) for o in out] == [6, 1, 3, 1, 1]  # the cats -> the, cat, ##s
    for empty in (out[1], out[3], out[4]):
        assert empty.shape == (1, 16) and not empty.any()
    tokenizer = transformers.AutoTokenizer.from_pretrained(models / "bert")
    model = transformers.AutoModel.from_pretrained(models / "bert").eval()
    with torch.no_grad():
        enc = tokenizer("i am so very happy !", return_tensors="pt")
        hidden = model(**enc, output_hidden_states=True).hidden_states
    manual = _last_layers(hidden)
    assert len(manual) == 8  # [CLS] + 6 tokens + [SEP]
    np.testing.assert_allclose(out[0], manual[1:-1], rtol=1e-4, atol=1e-5)
    alone = ext.extract(["the cats"])[0][""]  # no padding when alone in the batch
    np.testing.assert_allclose(out[2], alone, rtol=1e-4, atol=1e-5)
    short = HFTextExtractor("bert", {"model_path": str(models / "bert"), "max_length": 4})
    short.setup()
    assert short.extract(["i am so very happy !"])[0][""].shape == (2, 16)  # 4 - [CLS], [SEP]
    with pytest.raises(ConfigError, match=r"layers = 9: the model has only 5 hidden states"):
        HFTextExtractor("bert", {"model_path": str(models / "bert"), "layers": 9}).setup()
    with pytest.raises(ConfigError, match=r"clip_vision has no usable tokenizer"):
        HFTextExtractor("bert", {"model_path": str(models / "clip_vision")}).setup()


def test_sentence_extractor_from_a_local_folder(models: Path) -> None:
    folder = str(models / "sentence")
    ext = SentenceExtractor("tiny", {"kind": "sentence", "model": folder, "batch_size": 2})
    version = ext.version()
    assert "sha" in version
    ext.setup()
    assert ext.version() == version and ext.outputs()[0].dim == 16
    out = np.concatenate([item[""] for item in ext.extract(["i am happy", "", "the cat"])])
    np.testing.assert_allclose(np.linalg.norm(out[[0, 2]], axis=1), 1.0, atol=1e-5)
    assert not out[1].any()
    raw = SentenceExtractor("tiny", {"model": folder, "normalize": False})
    raw.setup()
    (item,) = raw.extract(["i am happy"])
    assert abs(np.linalg.norm(item[""]) - 1.0) > 1e-3
    np.testing.assert_allclose(item[""][0] / np.linalg.norm(item[""]), out[0], atol=1e-5)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _image(models: Path, name: str = "clip", **cfg: object) -> HFImageExtractor:
    ext = HFImageExtractor(name, {"kind": "hf_image", "model_path": str(models / name), **cfg})
    ext.setup()
    return ext


def _rgb(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def test_image_embeddings_of_uniform_face_crops(models: Path, media: dict[str, Path]) -> None:
    ext = _image(models, frames=4)
    (spec,) = ext.outputs()
    assert (spec.suffix, spec.level, spec.dim, spec.frame_rate) == ("", "frame", 8, None)
    (item,) = ext.extract([media["face"]])
    assert item[""].shape == (4, 8)
    every, _ = read_frames(media["face"])
    picked = [every[i] for i in uniform_indices(len(every), 4)]
    track = FaceTrack(FaceFinder())
    crops = [_rgb(crop(f, track.box_for(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)))) for f in picked]
    assert track.found >= 3 and ext.stats()["faces_found"] == track.found
    model = transformers.CLIPModel.from_pretrained(models / "clip").eval()
    processor = transformers.AutoImageProcessor.from_pretrained(models / "clip")
    with torch.no_grad():
        result = model.get_image_features(**processor(images=crops, return_tensors="pt"))
    manual = getattr(result, "pooler_output", result).numpy()
    np.testing.assert_allclose(item[""], manual, rtol=1e-4, atol=1e-5)
    whole = _image(models, frames=4, face=False, batch_size=3)  # 3 + 1 frames per pass
    (item,) = whole.extract([media["face"]])
    np.testing.assert_allclose(item[""], whole.embed([_rgb(f) for f in picked]), atol=1e-5)
    assert whole.stats()["clips"] == 0  # no face detection when face is off


def test_image_face_fallback_every_frame_and_vision_tower(
    models: Path, media: dict[str, Path]
) -> None:
    ext = _image(models, frames=0)
    ext.probe([media["noise"]])
    assert ext.outputs()[0].frame_rate == 10.0  # every frame: the clip's fps
    (item,) = ext.extract([media["noise"]])
    frames, _ = read_frames(media["noise"])
    assert item[""].shape == (len(frames), 8) == (12, 8)
    assert ext.stats()["faces_found"] == 0  # noise has no face: the centre crop stands in
    centre = [_rgb(crop(f, centre_box(*f.shape[:2]))) for f in frames]
    np.testing.assert_allclose(item[""], ext.embed(centre), atol=1e-5)
    tower = _image(models, "clip_vision", frames=2)
    assert tower.outputs()[0].dim == 16  # no projection: the pooled output
    (item,) = tower.extract([media["face"]])
    assert item[""].shape == (2, 16) and np.isfinite(item[""]).all()
    assert (
        tower.version() == HFImageExtractor("x", {"model_path": tower.cfg["model_path"]}).version()
    )
    empty = media["noise"].with_name("empty.mp4")
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty.mp4: .*empty"):
        tower.extract([empty])
    with pytest.raises(ConfigError, match=r"holds a 'bert' model, not an image model"):
        HFImageExtractor("x", {"model_path": str(models / "bert")}).setup()
