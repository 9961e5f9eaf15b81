"""Media reading, silence trimming and face boxes on real files: the built-in corpus's wav/mp4,
clips muxed here with PyAV, and (where present) the real EmoDB / RAVDESS samples."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from robustmer.config import validate_params
from robustmer.data.builtin import generate_corpus
from robustmer.features.base import MediaError
from robustmer.features.faces import CENTRE_CROP_FRACTION, FaceFinder, FaceTrack, centre_box
from robustmer.features.media import (
    iter_frames,
    load_audio,
    read_audio,
    read_frames,
    resample,
    uniform_indices,
    video_fps,
)
from robustmer.features.vad import speech_span, trim_silence

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SMALL = {"n_speakers": 2, "utterances_per_speaker": 4, "n_folds": 2}


def needs(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real-corpus samples ship beside the project only")
    return path


def builtin_corpus(out: Path) -> pd.DataFrame:
    """Eight real wav + mp4 utterances from the built-in generator (mp4 without sound)."""
    params = validate_params(
        {
            "seed": 3,
            "dataset": "builtin",
            "acquire": {"builtin": SMALL},
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
        }
    )
    return generate_corpus(out, params["acquire"]["builtin"], seed=5, workers=1)


def mux(video: Path, audio: Path, out: Path, codec: str) -> Path:
    """`video`'s frames (re-encoded mpeg4) plus `audio` as `codec`, in the container of `out`."""
    import av

    signal, rate = read_audio(audio)
    pcm = (np.clip(signal, -1, 1) * 32767).round().astype(np.int16)[None, :]
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream("mpeg4", rate=round(float(vin.average_rate)))
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        aout = dst.add_stream(codec, rate=rate, layout="mono")
        for frame in src.decode(vin):
            rgb = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            dst.mux(vout.encode(rgb))
        dst.mux(vout.encode(None))
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        dst.mux(aout.encode(frame))
        dst.mux(aout.encode(None))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("media") / "builtin"
    return root, builtin_corpus(root)


@pytest.fixture(scope="module")
def wav(corpus: tuple[Path, pd.DataFrame]) -> Path:
    root, meta = corpus
    return root / meta["audio_path"].iloc[0]


@pytest.fixture(scope="module")
def mp4(corpus: tuple[Path, pd.DataFrame]) -> Path:
    root, meta = corpus
    return root / meta["video_path"].iloc[0]


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def test_wav_reads_at_its_rate_and_resamples(wav: Path) -> None:
    import soundfile as sf

    native, rate = read_audio(wav)
    expected, _ = sf.read(str(wav), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(native, expected.mean(axis=1))
    assert native.dtype == np.float32
    np.testing.assert_array_equal(load_audio(wav, rate), native)
    down = load_audio(wav, 8000)
    assert down.dtype == np.float32 and abs(len(down) - len(native) * 8000 / rate) <= 1


def test_resampling_keeps_a_tone_and_its_level() -> None:
    t = np.arange(22050) / 22050
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = resample(tone, 22050, 16000)
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second
    assert abs(np.sqrt(np.mean(out[100:-100] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_audio_from_mp4_matches_the_wav_it_was_muxed_from(
    wav: Path, mp4: Path, tmp_path: Path
) -> None:
    reference = load_audio(wav)
    exact = load_audio(mux(mp4, wav, tmp_path / "pcm.mp4", "pcm_s16le"))
    np.testing.assert_allclose(exact, reference, atol=1.5 / 32768)
    lossy = load_audio(mux(mp4, wav, tmp_path / "aac.mp4", "aac"))
    # AAC adds up to one 1024-sample frame of encoder priming at the start and pads the end
    corr = np.correlate(lossy[:8000], reference[:4000], "valid")
    lag = int(np.argmax(corr))
    assert lag <= 2048 and len(reference) <= len(lossy) <= len(reference) + 3072
    aligned = lossy[lag : lag + len(reference)]
    assert np.corrcoef(aligned, reference)[0, 1] > 0.99


def test_bad_audio_files_raise_media_errors_naming_the_file(
    wav: Path, mp4: Path, tmp_path: Path
) -> None:
    cases = {
        "missing.wav": (None, "does not exist"),
        "empty.wav": (b"", "empty"),
        "garbage.wav": (b"RIFF\x00\x00garbage", "cannot read audio"),
        "truncated.wav": (wav.read_bytes()[: wav.stat().st_size // 2], "truncated"),
        "header_only.wav": (wav.read_bytes()[:44], "truncated|no samples"),
        "garbage.mp4": (b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 200, "cannot"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(MediaError, match=rf"{name}.*({reason})") as info:
            load_audio(path)
        assert info.value.item == str(path)
    with pytest.raises(MediaError, match=rf"{mp4.name}: has no audio stream"):
        load_audio(mp4)  # the built-in corpus's mp4 has no sound


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def test_uniform_indices_cover_the_clip_evenly() -> None:
    assert uniform_indices(100, 4) == [12, 37, 62, 87]
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]  # fewer frames than asked: all, no repeats
    assert uniform_indices(7, 0) == list(range(7))
    picked = uniform_indices(1000, 8)
    assert len(set(picked)) == 8 and np.ptp(np.diff(picked)) <= 1


def test_read_frames_every_step_and_uniformly(mp4: Path) -> None:
    every, fps = read_frames(mp4)
    assert fps == video_fps(mp4) and fps and fps > 0
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in every)
    cap = cv2.VideoCapture(str(mp4))
    assert len(every) == int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    stepped, _ = read_frames(mp4, step=3)
    assert len(stepped) == -(-len(every) // 3)
    for got, want in zip(stepped, every[::3], strict=True):
        np.testing.assert_array_equal(got, want)
    sampled, _ = read_frames(mp4, frames=5)
    for got, index in zip(sampled, uniform_indices(len(every), 5), strict=True):
        np.testing.assert_array_equal(got, every[index])
    assert len(read_frames(mp4, frames=10_000)[0]) == len(every)
    assert sum(1 for _ in iter_frames(mp4, 2)) == -(-len(every) // 2)


def test_bad_videos_raise_media_errors_naming_the_file(
    wav: Path, mp4: Path, tmp_path: Path
) -> None:
    import av

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    sound_only = tmp_path / "sound_only.mp4"
    with av.open(str(sound_only), "w") as dst:
        signal, rate = read_audio(wav)
        stream = dst.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(signal[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    for path, reason in [
        (tmp_path / "missing.mp4", "does not exist"),
        (empty, "empty"),
        (garbage, "cannot open video|no readable video frame"),
        (sound_only, "cannot open video|no readable video frame"),
    ]:
        for frames in (0, 4):
            with pytest.raises(MediaError, match=rf"{path.name}: .*({reason})"):
                read_frames(path, frames=frames)
    assert len(load_audio(sound_only)) > 0  # the sound-only file is a fine audio source


# --------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------


def test_face_track_falls_back_to_centre_then_last_box(mp4: Path) -> None:
    finder = FaceFinder()
    frames, _ = read_frames(mp4)
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    blank = np.zeros_like(grays[0])
    track = FaceTrack(finder, detect_every=1)
    first = track.box_for(blank)
    assert first == centre_box(*blank.shape) and track.found == 0
    side = int(min(blank.shape) * CENTRE_CROP_FRACTION)
    assert first[2:] == (side, side)
    face = track.box_for(grays[0])
    assert track.found == 1 and face != first  # the built-in faces are found
    assert track.box_for(blank) == face  # a miss keeps the last box
    sparse = FaceTrack(finder, detect_every=3)
    for gray in grays[:7]:
        sparse.box_for(gray)
    assert (sparse.attempts, sparse.n_seen) == (3, 7)


# --------------------------------------------------------------------------------------------
# Voice activity
# --------------------------------------------------------------------------------------------


def test_vad_without_speech_leaves_the_signal_unchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = np.random.default_rng(0)
    for signal, rate in [
        (np.zeros(16000, np.float32), 16000),
        ((rng.normal(size=22050) * 0.005).astype(np.float32), 22050),
    ]:
        with caplog.at_level(logging.WARNING, logger="robustmer.features.vad"):
            out = trim_silence(signal, rate, "quiet.wav")
        assert speech_span(signal, rate) is None
        np.testing.assert_array_equal(out, signal)
    assert "no speech in quiet.wav" in caplog.text


@pytest.mark.shared_data
def test_vad_trims_silence_padded_around_real_speech() -> None:
    wavs = sorted((needs("emodb") / "wav").glob("*.wav"))[:3]
    for path in wavs:
        speech, rate = read_audio(path)
        pad = np.zeros(rate, np.float32)  # one second of digital silence each side
        padded = np.concatenate([pad, speech, pad])
        trimmed = trim_silence(padded, rate, str(path))
        start, end = speech_span(padded, rate) or (0, 0)
        assert start >= 0.95 * rate and end <= rate + len(speech) + 0.05 * rate
        assert len(trimmed) == end - start and len(trimmed) > 0.5 * rate
        np.testing.assert_array_equal(trimmed, padded[start:end])


@pytest.mark.shared_data
def test_real_ravdess_clip_gives_sound_and_frames() -> None:
    clip = needs("ravdess") / "01-01-01-01-01-01-01.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is absent: the real-corpus samples ship beside the project only")
    audio = load_audio(clip)  # AAC stereo at 48 kHz in the file
    frames, fps = read_frames(clip, frames=8)
    assert fps == pytest.approx(29.97, abs=0.01) and len(frames) == 8
    assert frames[0].shape == (720, 1280, 3)
    n_frames = len(read_frames(clip)[0])
    assert len(audio) / 16000 == pytest.approx(n_frames / fps, abs=0.15)
    assert speech_span(audio, 16000) is not None
