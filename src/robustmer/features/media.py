"""Reading media for the extractors: mono float32 audio at a chosen rate, BGR video frames.

Wav / flac / ogg go through soundfile (the exact samples openSMILE has always seen); any other
container (mp4, mkv, webm, m4a, ...) is decoded with PyAV, which carries its own FFmpeg, so audio
comes out of video files on machines without a system ffmpeg. Frames are read with OpenCV, the
reader the HOG features have always used, so their numbers stay the same. Every failure is a
`MediaError` that names the file and says what to do. The local-model helpers at the end are
shared by the Hugging Face extractors.
"""

from __future__ import annotations

import hashlib
import json
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from robustmer.errors import ConfigError
from robustmer.features.base import Extractor, MediaError

SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff"})
REACQUIRE = "re-acquire the file or remove the utterance from the dataset's metadata"


def check_file(path: Path) -> None:
    """A missing or zero-length file is the commonest bad medium: say so before any decoder."""
    if not path.is_file():
        raise MediaError(str(path), f"file does not exist; {REACQUIRE}")
    if path.stat().st_size == 0:
        raise MediaError(str(path), f"file is empty (0 bytes); {REACQUIRE}")


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def _check_wav_complete(path: Path) -> None:
    """libsndfile silently reads a wav cut short by an interrupted copy: compare the header's
    data size with the bytes on disk. Streamed wavs (size 0 or 0xFFFFFFFF) are not checked."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not plain RIFF/WAVE (RF64, W64, ...): soundfile judges it
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk, length = struct.unpack("<4sI", fh.read(8))
            if chunk == b"data":
                available = size - offset - 8
                if length not in (0, 0xFFFFFFFF) and length > available:
                    raise MediaError(
                        str(path),
                        f"truncated wav: the header declares {length} bytes of audio but the file "
                        f"holds {available}; {REACQUIRE}",
                    )
                return
            offset += 8 + length + (length & 1)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if path.suffix.lower() == ".wav":
        _check_wav_complete(path)
    try:
        signal, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise MediaError(str(path), f"cannot read audio ({exc}); {REACQUIRE}") from exc
    return signal.mean(axis=1), int(rate)


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any container; channels averaged as for wav files."""
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise MediaError(str(path), f"cannot open the container ({exc}); {REACQUIRE}") from exc
    with container:
        if not container.streams.audio:
            raise MediaError(
                str(path),
                "has no audio stream; an audio extractor needs sound: point audio_path at a file "
                "with an audio track, or remove the audio extractor for this corpus",
            )
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # keeps layout and rate; only the sample type
        chunks: list[np.ndarray] = []
        rate = 0
        try:
            for frame in container.decode(stream):
                rate = rate or int(frame.sample_rate)
                for out in to_float.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
            for out in to_float.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(str(path), f"cannot decode audio ({exc}); {REACQUIRE}") from exc
    if not chunks:
        return np.zeros(0, np.float32), rate or int(stream.rate or 0)
    return np.concatenate(chunks).astype(np.float32, copy=False), rate


class AudioSource(ABC):
    """Audio made in memory rather than read from a file (a raw-noise condition's mix): the
    audio extractors take one wherever they take a path, so corrupted media need no scratch
    files. Picklable and small, as it travels to the extraction workers; `str()` names it in
    messages."""

    @abstractmethod
    def read(self) -> tuple[np.ndarray, int]:
        """Mono float32 samples and their rate."""


def read_audio(path: Path | str | AudioSource) -> tuple[np.ndarray, int]:
    """Mono float32 samples at the file's own rate (soundfile for wav/flac/ogg, else PyAV)."""
    if isinstance(path, AudioSource):
        return path.read()
    path = Path(path)
    check_file(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        signal, rate = _read_soundfile(path)
    else:
        signal, rate = _read_av(path)
    if signal.shape[0] == 0:
        raise MediaError(str(path), f"audio has no samples; {REACQUIRE}")
    return signal, rate


def resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased, exact rational ratio); identity at the same rate."""
    if rate == target:
        return signal.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(signal, target // g, rate // g).astype(np.float32)


def load_audio(path: Path | str | AudioSource, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples at `sample_rate` from a wav/flac or any audio/video container."""
    signal, rate = read_audio(path)
    return resample(signal, rate, sample_rate)


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def _open_video(path: Path) -> Any:
    import cv2

    check_file(path)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise MediaError(str(path), f"cannot open video; {REACQUIRE}")
    return cap


def _no_frame(path: Path) -> MediaError:
    return MediaError(str(path), f"no readable video frame; {REACQUIRE}")


def video_fps(path: Path | str) -> float | None:
    """Frames per second from the container, None when it does not say."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    return float(fps) if fps and fps > 0 else None


def uniform_indices(n_total: int, frames: int) -> list[int]:
    """`frames` indices spread evenly over `n_total` frames (the centre of each of `frames` equal
    segments, so neither the first nor the last, often a fade, is favoured); all when fewer."""
    if frames <= 0 or frames >= n_total:
        return list(range(n_total))
    return [int(i) for i in ((np.arange(frames) + 0.5) * n_total / frames).astype(np.int64)]


def iter_frames(path: Path | str, step: int = 1) -> Iterator[np.ndarray]:
    """Every `step`-th BGR frame (the 1st, the step+1-th, ...), streamed: long clips stay small.

    Raises `MediaError` when the file cannot be opened or yields no frame at all.
    """
    path = Path(path)
    cap = _open_video(path)
    index = 0
    try:
        while cap.grab():
            if index % step == 0:
                ok, frame = cap.retrieve()
                if ok:
                    yield frame
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise _no_frame(path)


def _count_frames(path: Path) -> int:
    cap = _open_video(path)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def _pick(path: Path, wanted: list[int]) -> tuple[list[np.ndarray], int]:
    """The frames at the sorted indices `wanted`, and how many frames the clip really has."""
    cap = _open_video(path)
    keep, out, index = set(wanted), [], 0
    try:
        while cap.grab():
            if index in keep:
                ok, frame = cap.retrieve()
                if ok:
                    out.append(frame)
            index += 1
    finally:
        cap.release()
    return out, index


def read_frames(
    path: Path | str, frames: int = 0, step: int = 1
) -> tuple[list[np.ndarray], float | None]:
    """BGR uint8 frames and the clip's fps: `frames` > 0 samples that many uniformly over the clip
    (see `uniform_indices`), else every `step`-th frame.

    The container's frame count can be wrong (variable frame rate, cut files); when decoding finds
    another count, the indices are recomputed from the true one and the clip is read again.
    """
    import cv2

    path = Path(path)
    fps = video_fps(path)
    if frames <= 0:
        return list(iter_frames(path, step)), fps
    cap = _open_video(path)
    try:
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    n_total = declared if declared > 0 else _count_frames(path)
    out, actual = _pick(path, uniform_indices(n_total, frames))
    if actual != n_total and actual > 0:
        out, actual = _pick(path, uniform_indices(actual, frames))
    if not out:
        raise _no_frame(path)
    return out, fps


# --------------------------------------------------------------------------------------------
# Local Hugging Face model folders (no downloads)
# --------------------------------------------------------------------------------------------


def local_model_dir(model_path: Any, where: str) -> Path:
    """The folder a Hugging Face model was saved to; a hub id or a missing path is an error
    that says how to get the folder (nothing is downloaded at run time)."""
    if not model_path:
        raise ConfigError(
            f"{where}: model_path is required: the folder of a model saved with "
            "save_pretrained() or `huggingface-cli download <id> --local-dir <folder>`"
        )
    path = Path(str(model_path)).expanduser()
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise ConfigError(
            f"{where}: model_path {str(model_path)!r} is not a local model folder with a "
            "config.json; download the model once (`huggingface-cli download <id> --local-dir "
            "<folder>`) and set model_path to that folder (there is no network at run time)"
        )
    return path


@lru_cache(maxsize=16)
def model_fingerprint(model_dir: str) -> str:
    """A short content hash of a model folder: configs in full, weights by size and their first
    and last MiB, so a replaced model changes the cache key without rereading gigabytes."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        rel = file.relative_to(root).as_posix()
        size = file.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with file.open("rb") as fh:
            if size <= 2 << 20:
                digest.update(fh.read())
            else:
                digest.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), 2)
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def model_description(model_dir: Path) -> str:
    """`<model_type> <folder name> sha <fingerprint>` for version strings and store metadata."""
    try:
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type", "?")
    except (OSError, ValueError):
        model_type = "?"
    return f"{model_type} {model_dir.name} sha {model_fingerprint(str(model_dir.resolve()))}"


# --------------------------------------------------------------------------------------------
# Option checks shared by the extractors
# --------------------------------------------------------------------------------------------


def is_int(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    )


def is_number(low: float, high: float | None = None) -> Callable[[Any], bool]:
    """Strictly above `low` (and at most `high`)."""
    return lambda v: (
        isinstance(v, int | float) and not isinstance(v, bool) and v > low
        and (high is None or v <= high)
    )  # fmt: skip


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def check_options(ext: Extractor, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """ConfigError naming `extract.<modality>.<name>.<key>` for the first bad option value."""
    for key, (ok, expected) in rules.items():
        if not ok(ext.cfg[key]):
            raise ConfigError(
                f"extract.{ext.modality}.{ext.name}.{key} = {ext.cfg[key]!r}: expected {expected}"
            )
