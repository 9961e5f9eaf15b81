"""Writing the rendered media: 16-bit PCM wav and mp4v video, each atomically."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from robustmer.errors import DataError
from robustmer.io import atomic_path


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, samples, sample_rate, subtype="PCM_16", format="WAV")


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """mp4v in an .mp4 container, which every OpenCV build can read back."""
    height, width = frames[0].shape[:2]
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise DataError(
                f"{path}: OpenCV cannot write mp4v video; install opencv-python-headless with "
                "its bundled FFmpeg"
            )
        try:
            for frame in frames:
                writer.write(frame)
        finally:
            writer.release()
