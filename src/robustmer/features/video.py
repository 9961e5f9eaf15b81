"""Video features: a HOG descriptor of the face in every (N-th) frame, and its utterance mean.

Faces are found with OpenCV's frontal-face Haar cascade (shipped in the opencv wheel). When a
frame has no detection the last detected box of the clip is reused, and before any detection a
centre crop stands in, so every frame yields a descriptor and the face-found rate is recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustmer.data.store import FeatureMeta
from robustmer.errors import DataError
from robustmer.features.base import ExtractedFeature, parallel_map

CENTRE_CROP_FRACTION = 0.8  # side of the fallback crop relative to the shorter frame side
_STATE: dict[str, Any] = {}


def _hog_shape(crop: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
    cell = max(4, crop // 4)
    return (crop, crop), (2 * cell, 2 * cell), (cell, cell), 9


def hog_dim(crop: int) -> int:
    (win, _), (block, _), (cell, _), bins = _hog_shape(crop)
    blocks = (win - block) // cell + 1
    return blocks * blocks * (block // cell) ** 2 * bins


def _init_video(cfg: dict[str, Any]) -> None:
    import cv2

    cv2.setNumThreads(1)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise DataError("OpenCV's haarcascade_frontalface_default.xml could not be loaded")
    win, block, stride, bins = _hog_shape(cfg["crop_size"])
    _STATE.update(
        cfg=cfg,
        cascade=cascade,
        hog=cv2.HOGDescriptor(win, block, stride, stride, bins),
    )


def _centre_box(h: int, w: int) -> tuple[int, int, int, int]:
    side = int(min(h, w) * CENTRE_CROP_FRACTION)
    return (w - side) // 2, (h - side) // 2, side, side


def _detect(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest face box in original pixels, detected on a copy no wider than detect_max_side."""
    import cv2

    cfg = _STATE["cfg"]
    scale = min(1.0, cfg["detect_max_side"] / max(gray.shape))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale)
    min_side = max(24, round(cfg["min_face_size"] * scale))  # the cascade's window is 24 px
    faces = _STATE["cascade"].detectMultiScale(
        small, scaleFactor=cfg["scale_factor"], minNeighbors=4, minSize=(min_side, min_side)
    )
    if not len(faces):
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return tuple(round(float(v) / scale) for v in (x, y, w, h))  # type: ignore[return-value]


def _one(path: Path) -> tuple[np.ndarray, int]:
    """`[T, D]` HOG descriptors of the clip's face crops and the number of detections made.

    Detection runs on every `detect_every`-th used frame; frames in between keep the last box
    (faces move little between frames, and detection is most of the cost).
    """
    import cv2

    cfg = _STATE["cfg"]
    crop = cfg["crop_size"]
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open video; re-acquire the file or remove the utterance")
    descriptors: list[np.ndarray] = []
    found = 0
    box: tuple[int, int, int, int] | None = None
    index = n_seen = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            if (index - 1) % cfg["frame_step"]:
                continue
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            if n_seen % cfg["detect_every"] == 0:
                detected = _detect(gray)
                if detected is not None:
                    box = detected
                    found += 1
            n_seen += 1
            x, y, w, h = box or _centre_box(*gray.shape)
            face = cv2.resize(
                gray[y : y + h, x : x + w], (crop, crop), interpolation=cv2.INTER_AREA
            )
            face = cv2.equalizeHist(face)
            descriptors.append(_STATE["hog"].compute(face).reshape(-1))
    finally:
        cap.release()
    if not descriptors:
        raise DataError(f"{path}: no readable frame; re-acquire the file or remove the utterance")
    return np.stack(descriptors).astype(np.float32), found


def extract_video(
    paths: list[Path], cfg: dict[str, Any], workers: int, fps: float | None = None
) -> list[ExtractedFeature]:
    """`video/face_hog` (frames) and `video/face_hog_mean` (utterance mean of the frames)."""
    import cv2

    out = parallel_map(_one, paths, workers, "video (faces)", _init_video, (cfg,))
    frames = [seq for seq, _ in out]
    n_detect = sum(-(-len(seq) // cfg["detect_every"]) for seq in frames)
    found_rate = sum(found for _, found in out) / max(n_detect, 1)
    dim = hog_dim(cfg["crop_size"])
    params = {**cfg, "cascade": "haarcascade_frontalface_default", "face_found_rate": found_rate}
    common = {"version": f"opencv {cv2.__version__}", "params": params}
    rate = None if fps is None else fps / cfg["frame_step"]
    return [
        ExtractedFeature(
            FeatureMeta("video", "face_hog", "frame", dim, frame_rate=rate, **common), frames
        ),
        ExtractedFeature(
            FeatureMeta("video", "face_hog_mean", "utterance", dim, **common),
            [seq.mean(axis=0, keepdims=True) for seq in frames],
        ),
    ]
