"""Video features: a HOG descriptor of the face in every (N-th) frame, and its utterance mean.

Faces come from `faces.FaceTrack` (Haar cascade, last-box and centre-crop fallbacks), so every
frame yields a descriptor; the crop is histogram-equalised so lighting changes little. The
face-found rate is kept per extractor instance (`stats()`), because a high fallback rate means
the descriptors describe background rather than faces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robustmer.features.base import (
    Extractor,
    MediaError,
    OutputSpec,
)
from robustmer.features.faces import CASCADE, FaceFinder, FaceStats, FaceTrack, crop
from robustmer.features.kinds import kind_defaults
from robustmer.features.media import (
    check_options,
    is_int,
    is_number,
    iter_frames,
    read_frames,
    video_fps,
)


def _hog_shape(size: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
    cell = max(4, size // 4)
    return (size, size), (2 * cell, 2 * cell), (cell, cell), 9


def hog_dim(crop_size: int) -> int:
    (win, _), (block, _), (cell, _), bins = _hog_shape(crop_size)
    blocks = (win - block) // cell + 1
    return blocks * blocks * (block // cell) ** 2 * bins


class FaceHogExtractor(Extractor):
    """`video/<name>` HOG frames of the face crop and `video/<name>_mean`, their mean.

    `frames` 0 uses every `frame_step`-th frame (frame rate fps / frame_step); N > 0 samples N
    frames uniformly over the clip (no fixed frame rate). Detection runs on every
    `detect_every`-th used frame, since detection is most of the cost.
    """

    modality = "video"
    kind = "face_hog"
    defaults: ClassVar[dict[str, Any]] = kind_defaults("face_hog")  # declared in kinds.py
    fps: float | None = None  # set by `probe()` (or the stage) for the frame output's rate

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        check_options(
            self,
            {
                "frame_step": (is_int(1), "an integer >= 1"),
                "frames": (is_int(0), "an integer >= 0 (0 = every frame_step-th frame)"),
                "crop_size": (is_int(16, 128), "an integer in [16, 128]"),
                "min_face_size": (is_int(8), "an integer >= 8"),
                "detect_every": (is_int(1), "an integer >= 1"),
                "detect_max_side": (is_int(48), "an integer >= 48"),
                "scale_factor": (is_number(1.0, 2.0), "a number in (1, 2]"),
            },
        )
        self._stats = FaceStats()

    def setup(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # one clip per worker process: threads only contend
        self._finder = FaceFinder(
            self.cfg["min_face_size"], self.cfg["detect_max_side"], self.cfg["scale_factor"]
        )
        win, block, stride, bins = _hog_shape(self.cfg["crop_size"])
        self._hog = cv2.HOGDescriptor(win, block, stride, stride, bins)

    def version(self) -> str:
        import cv2

        return f"opencv {cv2.__version__} ({CASCADE})"

    def probe(self, items: Sequence[Path]) -> None:
        """Read the fps of the first clip, for the frame rate `outputs()` declares."""
        if items:
            self.fps = video_fps(items[0])

    def frame_rate(self) -> float | None:
        if self.cfg["frames"] or not self.fps:
            return None
        return self.fps / self.cfg["frame_step"]

    def outputs(self) -> list[OutputSpec]:
        dim = hog_dim(self.cfg["crop_size"])
        return [
            OutputSpec("", "frame", dim, frame_rate=self.frame_rate()),
            OutputSpec("_mean", "utterance", dim),
        ]

    def stats(self) -> dict[str, float]:
        """Face-detection counts over the clips this instance (this process) has extracted."""
        return self._stats.as_dict()

    def _frames(self, path: Path) -> Iterable[np.ndarray]:
        if self.cfg["frames"]:
            return read_frames(path, self.cfg["frames"])[0]
        return iter_frames(path, self.cfg["frame_step"])

    def describe(self, path: Path) -> tuple[np.ndarray, FaceTrack]:
        """`[T, D]` HOG descriptors of the clip's face crops and the clip's face track."""
        import cv2

        size = self.cfg["crop_size"]
        track = FaceTrack(self._finder, self.cfg["detect_every"])
        descriptors: list[np.ndarray] = []
        for frame in self._frames(path):
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            face = cv2.resize(
                crop(gray, track.box_for(gray)), (size, size), interpolation=cv2.INTER_AREA
            )
            descriptors.append(self._hog.compute(cv2.equalizeHist(face)).reshape(-1))
        if not descriptors:
            raise MediaError(str(path), "no readable video frame; re-acquire the file")
        return np.stack(descriptors).astype(np.float32), track

    def extract(self, items: Sequence[Path]) -> list[dict[str, np.ndarray]]:
        out = []
        for path in items:
            if self.fps is None:
                self.fps = video_fps(path)
            seq, track = self.describe(Path(path))
            self._stats.add(track)
            out.append({"": seq, "_mean": seq.mean(axis=0, keepdims=True)})
        return out


# --------------------------------------------------------------------------------------------
