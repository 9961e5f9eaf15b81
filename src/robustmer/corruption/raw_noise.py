"""Signal-level corruption of raw media: noisy audio, blurred/dropped/occluded video, noisy text.

The evaluation stage corrupts a corpus with these functions and re-extracts features, so the
robustness numbers measure the whole pipeline, not just the classifier. The audio and blur recipes
follow MER2024's MER-NOISE generation (SNR 5..10 dB, blur rate in {1, 2, 4}), but every random
choice comes from a caller-supplied `np.random.Generator` so a corrupted corpus is reproducible
from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from robustmer.data.builtin.media import write_mp4, write_wav
from robustmer.errors import ConfigError, DataError

_INT16_POS_PEAK = 32767 / 32768  # largest positive float that maps into int16 without overflow
_INT16_NEG_PEAK = -1.0
_NOISE_SUFFIXES = (".wav", ".flac")
_PUNCTUATION = ".,!?;:\"'"
_DEFAULT_FPS = 25.0  # used when a container does not report its frame rate
BLUR_RATES = (1, 2, 4)


# --------------------------------------------------------------------------------------------
# Parameter checks
# --------------------------------------------------------------------------------------------


def _check_fraction(name: str, value: float, *, upper_inclusive: bool = True) -> float:
    """Rates and fractions must be finite numbers in [0, 1] (or [0, 1)); reject anything else."""
    value = float(value)
    upper_ok = value <= 1.0 if upper_inclusive else value < 1.0
    if not (math.isfinite(value) and value >= 0.0 and upper_ok):
        bound = "]" if upper_inclusive else ")"
        raise ConfigError(f"{name} must be in [0, 1{bound}, got {value}")
    return value


def _check_length(name: str, length: int, minimum: int = 1) -> int:
    if isinstance(length, bool) or int(length) != length or length < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {length!r}")
    return int(length)


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def rms(x: np.ndarray) -> float:
    """Root mean square in float64 (float32 sums lose precision on long signals); 0 for empty."""
    arr = np.asarray(x)
    if arr.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(arr, dtype=np.float64))))


def fit_noise_length(
    noise_parts: list[np.ndarray], length: int, rng: np.random.Generator
) -> np.ndarray:
    """Concatenate shuffled noise parts until longer than `length`, then crop at a random offset.

    This is MER-NOISE's recipe: short noise files are chained so any clean utterance can be
    covered, and the random offset keeps different utterances from sharing the same noise.
    """
    length = _check_length("length", length, minimum=0)
    parts = [np.asarray(p, dtype=np.float32).reshape(-1) for p in noise_parts]
    parts = [p for p in parts if p.size > 0]
    if not parts:
        raise DataError(
            "no non-empty noise signal to fit; pass at least one noise file with samples "
            "(e.g. MUSAN speech/) or use the built-in white/pink/babble noise"
        )
    chained: list[np.ndarray] = []
    total = 0
    while total <= length:
        for i in rng.permutation(len(parts)):
            chained.append(parts[i])
            total += parts[i].size
    joined = np.concatenate(chained)
    offset = int(rng.integers(0, joined.size - length + 1))
    return joined[offset : offset + length].copy()


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """Add `noise` to `clean` at `snr_db`; return (mixed float32, gain applied to the noise).

    `gain = (rms(clean) / 10**(snr/20)) / rms(noise)`. If the mix would overflow int16 when
    written, the whole signal is scaled down (as MER-NOISE does), which keeps the SNR. The gain
    returned is the one before that rescale.
    """
    clean_arr = np.asarray(clean, dtype=np.float64)
    noise_arr = np.asarray(noise, dtype=np.float64)
    if clean_arr.shape != noise_arr.shape:
        raise ValueError(
            f"noise shape {noise_arr.shape} differs from clean shape {clean_arr.shape}; "
            "fit it with fit_noise_length first"
        )
    snr_db = float(snr_db)
    if not math.isfinite(snr_db):
        raise ConfigError(f"snr_db must be a finite number, got {snr_db}")
    clean_rms = rms(clean_arr)
    if clean_rms == 0.0:
        return clean_arr.astype(np.float32), 0.0
    noise_rms = rms(noise_arr)
    if noise_rms == 0.0:
        raise DataError(
            "noise signal is silent (rms 0) and cannot reach any SNR; pick another noise file "
            "or a built-in noise (white/pink/babble)"
        )
    gain = (clean_rms / 10 ** (snr_db / 20)) / noise_rms
    mixed = clean_arr + noise_arr * gain
    scale = 1.0
    peak, trough = float(mixed.max()), float(mixed.min())
    if peak > _INT16_POS_PEAK:
        scale = min(scale, _INT16_POS_PEAK / peak)
    if trough < _INT16_NEG_PEAK:
        scale = min(scale, _INT16_NEG_PEAK / trough)
    if scale < 1.0:
        mixed = mixed * scale
    return mixed.astype(np.float32), float(gain)


def measured_snr(clean: np.ndarray, mixed: np.ndarray) -> float:
    """SNR in dB of `mixed` against `clean`, taking the noise as `mixed - clean`."""
    clean_arr = np.asarray(clean, dtype=np.float64)
    mixed_arr = np.asarray(mixed, dtype=np.float64)
    if clean_arr.shape != mixed_arr.shape:
        raise ValueError(f"shapes differ: clean {clean_arr.shape}, mixed {mixed_arr.shape}")
    signal, noise = rms(clean_arr), rms(mixed_arr - clean_arr)
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 20.0 * math.log10(signal / noise)


def white_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise with unit rms (the level is set later by `mix_at_snr`)."""
    length = _check_length("length", length)
    x = rng.standard_normal(length)
    return (x / (rms(x) or 1.0)).astype(np.float32)


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """1/f (pink) noise with unit rms: white noise shaped by 1/sqrt(f) in the rfft domain.

    Pink noise weights low frequencies like speech and many environments do, a harder and more
    realistic condition than white noise at the same SNR.
    """
    length = _check_length("length", length)
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    shaping = np.zeros_like(freqs)
    shaping[1:] = 1.0 / np.sqrt(freqs[1:])
    x = np.fft.irfft(spectrum * shaping, n=length)
    level = rms(x)
    if level == 0.0:  # length 1 has only the (zeroed) DC bin
        return white_noise(length, rng)
    return (x / level).astype(np.float32)


def babble_noise(
    others: list[np.ndarray], length: int, rng: np.random.Generator, n_talkers: int = 4
) -> np.ndarray:
    """Sum of `n_talkers` other utterances, each fitted to `length` and normalised to unit rms.

    Babble (competing speech) is the hardest noise for emotion recognition because it carries
    prosody of its own; drawing talkers from the corpus needs no external noise set.
    """
    length = _check_length("length", length)
    n_talkers = _check_length("n_talkers", n_talkers)
    usable = [np.asarray(u, dtype=np.float32).reshape(-1) for u in others]
    usable = [u for u in usable if u.size > 0 and rms(u) > 0.0]
    if not usable:
        raise DataError(
            "babble noise needs at least one non-silent utterance; pass other utterances of "
            "the corpus or choose white/pink noise"
        )
    chosen = rng.choice(len(usable), size=min(n_talkers, len(usable)), replace=False)
    total = np.zeros(length, dtype=np.float64)
    for i in chosen:
        talker = fit_noise_length([usable[int(i)]], length, rng).astype(np.float64)
        level = rms(talker)
        if level > 0.0:  # a crop can land on a silent stretch; it then adds nothing
            total += talker / level
    return total.astype(np.float32)


def load_noise_folder(folder: Path, sample_rate: int) -> list[np.ndarray]:
    """Every wav/flac under `folder` (sorted, recursive) as mono float32 at `sample_rate`."""
    folder = Path(folder)
    sample_rate = _check_length("sample_rate", sample_rate)
    files = (
        sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _NOISE_SUFFIXES)
        if folder.is_dir()
        else []
    )
    if not files:
        raise DataError(
            f"{folder}: no .wav or .flac noise files found; point the noise folder at e.g. "
            "MUSAN's speech/ directory, or use a built-in noise (white, pink, babble)"
        )
    out: list[np.ndarray] = []
    for path in files:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises several types for corrupt files
            raise DataError(
                f"{path}: cannot read noise audio ({exc}); replace or delete the file"
            ) from exc
        signal = data.mean(axis=1)
        if int(rate) != sample_rate and signal.size > 0:
            g = math.gcd(int(rate), sample_rate)
            signal = resample_poly(signal, sample_rate // g, int(rate) // g)
        out.append(np.asarray(signal, dtype=np.float32))
    return out


def draw_snr(rng: np.random.Generator, low: int = 5, high: int = 10) -> int:
    """A uniformly drawn integer SNR in [low, high] dB (MER-NOISE uses 5..10)."""
    if low > high:
        raise ConfigError(f"SNR range is empty: low={low} > high={high}")
    return int(rng.integers(low, high + 1))


def draw_blur_rate(rng: np.random.Generator, rates: Sequence[int] = BLUR_RATES) -> int:
    """A blur rate drawn uniformly from `rates` (MER-NOISE uses {1, 2, 4})."""
    if len(rates) == 0:
        raise ConfigError("blur rates must not be empty")
    for rate in rates:
        _blur_passes(rate)
    return int(rates[int(rng.integers(len(rates)))])


def as_pcm16(samples: np.ndarray) -> np.ndarray:
    """The float32 samples `write_audio` then `read_audio` give back: 16-bit PCM in memory.

    libsndfile (1.2) writes a float as a 32-bit integer, `rint(x * 2**31)`, then keeps its top
    16 bits, and reads `q / 32768`. Done the same way here, an utterance mixed in memory is,
    sample for sample, the file it was before; tests/test_raw_noise_memory.py checks this
    against soundfile itself.
    """
    wide = np.asarray(samples, dtype=np.float32).astype(np.float64) * 2.0**31
    q = np.clip(np.rint(wide), -(2.0**31), 2.0**31 - 1).astype(np.int64) >> 16
    return (q / np.float32(32768)).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write 16-bit PCM atomically, so an interrupted corruption run leaves no partial file."""
    rate = _check_length("rate", rate)
    write_wav(Path(path), np.asarray(samples, dtype=np.float32), rate)


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def _blur_passes(rate: int) -> int:
    """log2(rate) for a power of two >= 1; anything else is a configuration error."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise ConfigError(f"blur rate must be an integer power of two (1, 2, 4, ...), got {rate!r}")
    rate = int(rate)
    if rate < 1 or rate & (rate - 1):
        raise ConfigError(f"blur rate must be a power of two >= 1 (1, 2, 4, ...), got {rate}")
    return rate.bit_length() - 1


def _check_frame(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"expected an image array [H, W] or [H, W, C], got shape {arr.shape}")
    return arr


def blur_frame(frame: np.ndarray, rate: int) -> np.ndarray:
    """Lose detail like a low-resolution camera: log2(rate) pyrDown passes, then as many pyrUp.

    The output has the input's shape (odd sizes are resized back); rate 1 is an exact copy.
    """
    passes = _blur_passes(rate)
    arr = _check_frame(frame)
    if passes == 0:
        return arr.copy()
    out = arr
    for _ in range(passes):
        out = cv2.pyrDown(out)
    for _ in range(passes):
        out = cv2.pyrUp(out)
    height, width = arr.shape[:2]
    if out.shape[:2] != (height, width):
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(arr.shape)


def blur_frames(frames: list[np.ndarray], rate: int) -> list[np.ndarray]:
    """`blur_frame` on every frame of a clip."""
    _blur_passes(rate)
    return [blur_frame(f, rate) for f in frames]


def drop_frames(
    frames: list[np.ndarray], fraction: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Remove round(fraction * n) random frames (order kept, at least one left), like a lossy link.

    The kept frames are the input arrays themselves, not copies.
    """
    fraction = _check_fraction("fraction", fraction, upper_inclusive=False)
    n = len(frames)
    if n == 0:
        raise DataError("cannot drop frames from an empty clip; check that the video was read")
    n_drop = min(round(fraction * n), n - 1)
    if n_drop == 0:
        return list(frames)
    dropped = set(rng.choice(n, size=n_drop, replace=False).tolist())
    return [f for i, f in enumerate(frames) if i not in dropped]


def occlude_frames(
    frames: list[np.ndarray], area_fraction: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Black out one fixed rectangle of about `area_fraction` of the frame in every frame.

    The box (sides sqrt(area_fraction) of height and width) is placed once per clip, like a
    hand or object held in front of the face.
    """
    area_fraction = _check_fraction("area_fraction", area_fraction)
    arrays = [_check_frame(f) for f in frames]
    if not arrays or area_fraction == 0.0:
        return [a.copy() for a in arrays]
    height, width = arrays[0].shape[:2]
    if any(a.shape[:2] != (height, width) for a in arrays):
        raise DataError("frames of one clip differ in size; re-encode the video")
    side = math.sqrt(area_fraction)
    box_h = min(height, max(1, round(side * height)))
    box_w = min(width, max(1, round(side * width)))
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    out = []
    for a in arrays:
        occluded = a.copy()
        occluded[top : top + box_h, left : left + box_w] = 0
        out.append(occluded)
    return out


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (uint8 BGR) and the frame rate; 25 fps when the container reports none."""
    path = Path(path)
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
        while cap.isOpened():
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise DataError(
            f"{path}: no readable video frame; re-acquire the file or remove the utterance "
            "from the dataset's metadata"
        )
    if not math.isfinite(fps) or fps <= 0:
        fps = _DEFAULT_FPS
    return frames, fps


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Write frames as mp4v atomically; the container needs an integer fps, so it is rounded."""
    if not frames:
        raise DataError(f"{path}: no frames to write; the corrupted clip is empty")
    arrays = [np.asarray(f) for f in frames]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise DataError(f"{path}: frames differ in shape; all frames of a clip must match")
    if arrays[0].dtype != np.uint8:
        raise DataError(
            f"{path}: frames must be uint8 BGR as OpenCV reads them, got {arrays[0].dtype}"
        )
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a positive number, got {fps}")
    write_mp4(Path(path), [np.ascontiguousarray(a) for a in arrays], max(1, round(fps)))


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _normalise_word(word: str) -> str:
    return word.strip(_PUNCTUATION).lower()


def drop_words(text: str, rate: float, rng: np.random.Generator) -> str:
    """Drop each word independently with probability `rate` (ASR deletions, truncated captions).

    An empty result is allowed: the text extractor maps empty text to zeros. Rate 0 returns the
    text unchanged; otherwise kept words are joined by single spaces.
    """
    rate = _check_fraction("rate", rate)
    words = text.split()
    if not words:
        return ""
    if rate == 0.0:
        return text
    keep = rng.random(len(words)) >= rate
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)


def substitute_words(
    text: str, rate: float, rng: np.random.Generator, vocabulary: list[str]
) -> str:
    """Replace each word with probability `rate` by a random vocabulary word (ASR substitutions).

    The replacement differs from the original word (compared lower-cased, without punctuation)
    whenever the vocabulary has another word to offer.
    """
    rate = _check_fraction("rate", rate)
    vocab = list(dict.fromkeys(vocabulary))
    if rate > 0.0 and not vocab:
        raise ConfigError("substitute_words needs a non-empty vocabulary when rate > 0")
    words = text.split()
    if not words:
        return ""
    if rate == 0.0:
        return text
    position = {w: i for i, w in enumerate(vocab)}
    hits = rng.random(len(words)) < rate
    out = []
    for word, hit in zip(words, hits, strict=True):
        if not hit:
            out.append(word)
            continue
        own = position.get(_normalise_word(word))
        if own is None or len(vocab) == 1:
            out.append(vocab[int(rng.integers(len(vocab)))])
        else:
            j = int(rng.integers(len(vocab) - 1))
            out.append(vocab[j + 1 if j >= own else j])
    return " ".join(out)


def corpus_vocabulary(texts: list[str]) -> list[str]:
    """Sorted unique lower-cased words of a corpus, so substitutions stay in-domain."""
    words = {_normalise_word(w) for text in texts for w in text.split()}
    words.discard("")
    return sorted(words)
