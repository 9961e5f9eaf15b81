"""Signal-level corruption: SNR accuracy, noise colours, blur/drop/occlude and text noise."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from robustmer.corruption import raw_noise as rn
from robustmer.errors import ConfigError, DataError

SR = 16000


def _speech(seconds: float = 1.0, amplitude: float = 0.1, f0: float = 140.0) -> np.ndarray:
    """Harmonic 'voice' with a slow amplitude envelope, peak about `amplitude`."""
    t = np.arange(int(seconds * SR)) / SR
    harmonics = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    x = harmonics * envelope
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


def _noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        return rn.white_noise(length, rng)
    if kind == "pink":
        return rn.pink_noise(length, rng)
    others = [_speech(0.4 + 0.1 * i, f0=100.0 + 30 * i) for i in range(6)]
    return rn.babble_noise(others, length, rng)


# ------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr", [0, 5, 10, 20])
def test_mix_reaches_target_snr(kind: str, snr: int) -> None:
    rng = np.random.default_rng(snr)
    clean = _speech()
    noise = _noise(kind, clean.size, rng)
    mixed, _ = rn.mix_at_snr(clean, noise, snr)
    assert mixed.dtype == np.float32 and mixed.shape == clean.shape
    assert np.abs(mixed).max() <= 1.0  # no clipping path in these cases
    assert abs(rn.measured_snr(clean, mixed) - snr) < 0.5


def test_gain_matches_hand_computation() -> None:
    clean = np.array([0.1, -0.2, 0.3, -0.1], dtype=np.float32)
    noise = np.array([1.0, -1.0, 0.5, -0.5], dtype=np.float32)
    snr = 6.0
    clean_rms = math.sqrt((0.01 + 0.04 + 0.09 + 0.01) / 4)
    noise_rms = math.sqrt((1 + 1 + 0.25 + 0.25) / 4)
    expected = (clean_rms / 10 ** (snr / 20)) / noise_rms
    mixed, gain = rn.mix_at_snr(clean, noise, snr)
    assert gain == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(mixed, clean + noise * expected, rtol=1e-5, atol=1e-7)


def test_loud_mix_is_rescaled_and_keeps_snr() -> None:
    rng = np.random.default_rng(1)
    clean = _speech(amplitude=0.95)
    noise = rn.white_noise(clean.size, rng)
    snr = 5.0
    mixed, gain = rn.mix_at_snr(clean, noise, snr)
    unscaled = clean.astype(np.float64) + noise * gain
    assert np.abs(unscaled).max() > 1.0  # the case really overflows
    assert mixed.max() <= 32767 / 32768 + 1e-7 and mixed.min() >= -1.0 - 1e-7
    assert np.abs(mixed).max() == pytest.approx(
        32767 / 32768 if unscaled.max() >= -unscaled.min() else 1.0, rel=1e-6
    )
    scale = float(np.dot(mixed, unscaled) / np.dot(unscaled, unscaled))
    assert scale < 1.0
    assert abs(rn.measured_snr(clean * scale, mixed) - snr) < 0.5


def test_silent_inputs() -> None:
    clean = _speech()
    with pytest.raises(DataError, match="silent"):
        rn.mix_at_snr(clean, np.zeros_like(clean), 5)
    silent = np.zeros(100, dtype=np.float32)
    mixed, gain = rn.mix_at_snr(silent, np.ones(100, dtype=np.float32), 5)
    assert gain == 0.0 and np.array_equal(mixed, silent)
    with pytest.raises(ValueError):
        rn.mix_at_snr(clean, clean[:-1], 5)
    with pytest.raises(ConfigError):
        rn.mix_at_snr(clean, clean, float("nan"))


def test_fit_noise_length_exact_and_deterministic() -> None:
    parts = [np.arange(7, dtype=np.float32), np.arange(100, 103, dtype=np.float32)]
    for length in (0, 1, 5, 10, 11, 100):
        out = rn.fit_noise_length(parts, length, np.random.default_rng(0))
        assert out.shape == (length,) and out.dtype == np.float32
    a = rn.fit_noise_length(parts, 50, np.random.default_rng(42))
    b = rn.fit_noise_length(parts, 50, np.random.default_rng(42))
    assert np.array_equal(a, b)
    # every sample comes from the parts
    assert set(a.tolist()) <= set(np.concatenate(parts).tolist())
    with pytest.raises(DataError):
        rn.fit_noise_length([], 10, np.random.default_rng(0))
    with pytest.raises(DataError):
        rn.fit_noise_length([np.zeros(0)], 10, np.random.default_rng(0))


def _spectral_slope(x: np.ndarray) -> float:
    """Slope of log power vs log frequency over mid bands, averaged over segments."""
    seg = 4096
    segments = x[: x.size // seg * seg].reshape(-1, seg)
    power = np.mean(np.abs(np.fft.rfft(segments * np.hanning(seg), axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(seg)
    band = (freqs > 0.005) & (freqs < 0.25)
    slope, _ = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)
    return float(slope)


def test_noise_colours() -> None:
    rng = np.random.default_rng(3)
    pink = rn.pink_noise(SR * 8, rng)
    white = rn.white_noise(SR * 8, rng)
    assert rn.rms(pink) == pytest.approx(1.0, rel=1e-4)
    assert rn.rms(white) == pytest.approx(1.0, rel=1e-4)
    assert abs(_spectral_slope(pink) + 1.0) < 0.3
    assert abs(_spectral_slope(white)) < 0.3


def test_babble_noise() -> None:
    others = [_speech(0.3, f0=120.0), _speech(0.5, f0=200.0)]
    out = rn.babble_noise(others, 12000, np.random.default_rng(0), n_talkers=4)
    assert out.shape == (12000,) and rn.rms(out) > 0
    again = rn.babble_noise(others, 12000, np.random.default_rng(0), n_talkers=4)
    assert np.array_equal(out, again)
    with pytest.raises(DataError):
        rn.babble_noise([], 100, np.random.default_rng(0))


def test_draw_snr_range() -> None:
    rng = np.random.default_rng(0)
    draws = {rn.draw_snr(rng) for _ in range(500)}
    assert draws == set(range(5, 11))
    assert {rn.draw_blur_rate(rng) for _ in range(200)} == {1, 2, 4}
    with pytest.raises(ConfigError):
        rn.draw_snr(rng, 10, 5)


def test_load_noise_folder_resamples(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "a.wav", np.full(800, 0.1, dtype=np.float32), 8000)
    sf.write(tmp_path / "sub" / "b.wav", np.full(1600, 0.2, dtype=np.float32), 16000)
    out = rn.load_noise_folder(tmp_path, 16000)
    assert [x.size for x in out] == [1600, 1600]
    assert all(x.dtype == np.float32 for x in out)


def test_load_noise_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty") as err:
        rn.load_noise_folder(empty, 16000)
    assert "MUSAN" in str(err.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.wav").write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(DataError, match=r"broken\.wav"):
        rn.load_noise_folder(bad, 16000)


def test_audio_round_trip(tmp_path: Path) -> None:
    x = _speech(0.25)
    rn.write_audio(tmp_path / "x.wav", x, SR)
    from robustmer.features.media import read_audio  # the reader the extractors use

    y, rate = read_audio(tmp_path / "x.wav")
    assert rate == SR and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-4)


# ------------------------------------------------------------------------------------- video


def _frame(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Checkerboard plus noise: lots of high-frequency detail for the blur to remove."""
    yy, xx = np.mgrid[:height, :width]
    board = (((yy // 4) + (xx // 4)) % 2 * 200).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, 20, (height, width))
    gray = np.clip(board + noise + 20, 0, 255).astype(np.uint8)
    return np.stack([gray, np.roll(gray, 3, axis=1), np.roll(gray, 5, axis=0)], axis=-1)


def _sharpness(frame: np.ndarray) -> float:
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


@pytest.mark.parametrize("size", [(96, 128), (127, 97)])
def test_blur_reduces_detail_and_keeps_shape(size: tuple[int, int]) -> None:
    frame = _frame(*size)
    same = rn.blur_frame(frame, 1)
    assert np.array_equal(same, frame) and same is not frame
    b2, b4 = rn.blur_frame(frame, 2), rn.blur_frame(frame, 4)
    assert b2.shape == frame.shape and b4.shape == frame.shape
    assert b2.dtype == np.uint8 and b4.dtype == np.uint8
    assert _sharpness(frame) > _sharpness(b2) > _sharpness(b4)


@pytest.mark.parametrize("rate", [3, 0, -2, 2.0])
def test_blur_rejects_bad_rate(rate: int) -> None:
    with pytest.raises(ConfigError):
        rn.blur_frame(_frame(), rate)
    with pytest.raises(ConfigError):
        rn.blur_frames([_frame()], rate)


def test_blur_frames_clip() -> None:
    frames = [_frame(seed=i) for i in range(3)]
    out = rn.blur_frames(frames, 2)
    assert len(out) == 3 and all(o.shape == f.shape for o, f in zip(out, frames, strict=True))


def test_drop_frames() -> None:
    frames = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(20)]
    kept = rn.drop_frames(frames, 0.25, np.random.default_rng(0))
    ids = [int(f[0, 0, 0]) for f in kept]
    assert len(ids) == 15 and ids == sorted(ids)
    again = rn.drop_frames(frames, 0.25, np.random.default_rng(0))
    assert [int(f[0, 0, 0]) for f in again] == ids
    assert len(rn.drop_frames(frames, 0.99, np.random.default_rng(0))) == 1
    assert len(rn.drop_frames(frames[:1], 0.9, np.random.default_rng(0))) == 1
    assert len(rn.drop_frames(frames, 0.0, np.random.default_rng(0))) == 20
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError):
            rn.drop_frames(frames, bad, np.random.default_rng(0))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_occlude_frames(fraction: float) -> None:
    frames = [np.full((120, 160, 3), 255, dtype=np.uint8) for _ in range(5)]
    out = rn.occlude_frames(frames, fraction, np.random.default_rng(7))
    masks = [(o == 0).all(axis=-1) for o in out]
    assert all(np.array_equal(m, masks[0]) for m in masks)
    assert masks[0].mean() == pytest.approx(fraction, abs=0.02)
    rows, cols = np.nonzero(masks[0])
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box == masks[0].sum()  # one solid rectangle
    assert all((f == 255).all() for f in frames)  # inputs untouched


def test_occlude_zero_and_bad_fraction() -> None:
    frames = [_frame(seed=i) for i in range(2)]
    out = rn.occlude_frames(frames, 0.0, np.random.default_rng(0))
    assert all(np.array_equal(o, f) for o, f in zip(out, frames, strict=True))
    with pytest.raises(ConfigError):
        rn.occlude_frames(frames, 1.5, np.random.default_rng(0))


def test_video_round_trip(tmp_path: Path) -> None:
    frames = [_frame(64, 80, seed=i) for i in range(6)]
    path = tmp_path / "clip.mp4"
    rn.write_video(path, frames, 24.6)
    read, fps = rn.read_video(path)
    assert len(read) == len(frames)
    assert all(f.shape == (64, 80, 3) and f.dtype == np.uint8 for f in read)
    assert fps == pytest.approx(25.0, abs=0.5)


def test_read_video_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataError, match=r"bad\.mp4"):
        rn.read_video(bad)
    with pytest.raises(DataError):
        rn.write_video(tmp_path / "empty.mp4", [], 25)


# -------------------------------------------------------------------------------------- text

TEXT = "I really cannot believe you did that, it is wonderful news!"


def test_drop_words() -> None:
    rng = np.random.default_rng(0)
    assert rn.drop_words(TEXT, 0.0, rng) == TEXT
    assert rn.drop_words(TEXT, 1.0, rng) == ""
    assert rn.drop_words("", 0.5, rng) == ""
    assert rn.drop_words(TEXT, 0.4, np.random.default_rng(5)) == rn.drop_words(
        TEXT, 0.4, np.random.default_rng(5)
    )
    long_text = " ".join(f"w{i}" for i in range(5000))
    kept = rn.drop_words(long_text, 0.3, np.random.default_rng(1)).split()
    assert len(kept) / 5000 == pytest.approx(0.7, abs=0.03)
    assert kept == sorted(kept, key=lambda w: int(w[1:]))  # order preserved
    with pytest.raises(ConfigError):
        rn.drop_words(TEXT, 1.2, rng)


def test_substitute_words() -> None:
    vocab = rn.corpus_vocabulary([TEXT, "another sentence here"])
    rng = np.random.default_rng(0)
    assert rn.substitute_words(TEXT, 0.0, rng, vocab) == TEXT
    assert rn.substitute_words(TEXT, 0.0, rng, []) == TEXT
    words = TEXT.split()
    subbed = rn.substitute_words(TEXT, 1.0, rng, vocab).split()
    assert len(subbed) == len(words)
    assert all(s in vocab for s in subbed)
    assert all(s != w.strip(".,!?").lower() for s, w in zip(subbed, words, strict=True))
    assert rn.substitute_words(TEXT, 0.5, np.random.default_rng(9), vocab) == rn.substitute_words(
        TEXT, 0.5, np.random.default_rng(9), vocab
    )
    long_words = [f"w{i}" for i in range(5000)]
    out = rn.substitute_words(" ".join(long_words), 0.2, np.random.default_rng(2), ["x", "y"])
    changed = sum(a != b for a, b in zip(out.split(), long_words, strict=True))
    assert changed / 5000 == pytest.approx(0.2, abs=0.03)
    assert rn.substitute_words("", 0.5, rng, vocab) == ""
    with pytest.raises(ConfigError):
        rn.substitute_words(TEXT, 0.5, rng, [])


def test_corpus_vocabulary() -> None:
    vocab = rn.corpus_vocabulary(["Hello, world!", "hello 'there'; WORLD?", "  ", "..."])
    assert vocab == ["hello", "there", "world"]
