"""Face boxes for the video extractors: OpenCV's frontal-face Haar cascade with fallbacks.

The cascade ships in the opencv wheel, so this runs offline. A frame without a detection reuses
the clip's last detected box (faces move little between frames), and before any detection a
centre crop stands in, so every frame yields a crop; the found rate is counted so the stage can
record how often the fallback was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustmer.errors import DataError

CASCADE = "haarcascade_frontalface_default"
CENTRE_CROP_FRACTION = 0.8  # side of the fallback crop relative to the shorter frame side
CASCADE_WINDOW = 24  # the cascade's own window: smaller faces cannot be found

Box = tuple[int, int, int, int]  # x, y, width, height in original pixels


def centre_box(h: int, w: int) -> Box:
    side = int(min(h, w) * CENTRE_CROP_FRACTION)
    return (w - side) // 2, (h - side) // 2, side, side


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    return image[y : y + h, x : x + w]


class FaceFinder:
    """The largest frontal face of a grey frame, detected on a copy no wider than
    `detect_max_side` (HD video costs as much as SD)."""

    def __init__(
        self, min_face_size: int = 24, detect_max_side: int = 320, scale_factor: float = 1.2
    ):
        import cv2

        if not hasattr(cv2, "CascadeClassifier"):  # some OpenCV builds leave objdetect out
            raise DataError(
                f"this OpenCV build ({cv2.__version__}) has no CascadeClassifier; install "
                "opencv-python-headless (it ships the Haar cascades), or set face: false"
            )
        self.cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}{CASCADE}.xml")
        if self.cascade.empty():
            raise DataError(
                f"OpenCV's {CASCADE}.xml could not be loaded; reinstall opencv-python-headless"
            )
        self.min_face_size = min_face_size
        self.detect_max_side = detect_max_side
        self.scale_factor = scale_factor

    def detect(self, gray: np.ndarray) -> Box | None:
        import cv2

        scale = min(1.0, self.detect_max_side / max(gray.shape))
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale)
        min_side = max(CASCADE_WINDOW, round(self.min_face_size * scale))
        faces = self.cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=4, minSize=(min_side, min_side)
        )
        if not len(faces):
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return tuple(round(float(v) / scale) for v in (x, y, w, h))  # type: ignore[return-value]


@dataclass
class FaceTrack:
    """One clip's boxes: detect on every `detect_every`-th frame, keep the last box in between
    and on misses, the centre crop before any detection. Counts attempts and hits."""

    finder: FaceFinder
    detect_every: int = 1
    box: Box | None = None
    n_seen: int = 0
    attempts: int = 0
    found: int = 0

    def box_for(self, gray: np.ndarray) -> Box:
        if self.n_seen % self.detect_every == 0:
            self.attempts += 1
            detected = self.finder.detect(gray)
            if detected is not None:
                self.box = detected
                self.found += 1
        self.n_seen += 1
        return self.box or centre_box(*gray.shape[:2])


@dataclass
class FaceStats:
    """Face-detection counts over the clips one extractor instance has processed."""

    clips: int = 0
    frames: int = 0
    attempts: int = 0
    found: int = 0

    def add(self, track: FaceTrack) -> None:
        self.clips += 1
        self.frames += track.n_seen
        self.attempts += track.attempts
        self.found += track.found

    def as_dict(self) -> dict[str, float]:
        return {
            "clips": self.clips,
            "frames": self.frames,
            "detections_tried": self.attempts,
            "faces_found": self.found,
            "face_found_rate": self.found / max(self.attempts, 1),
        }
