"""The `extract` stage: raw corpus folder -> canonical feature store.

A raw corpus folder holds `metadata.csv` (one row per utterance: sample_id, speaker, label,
fold or split, text, and media paths relative to the folder) and `corpus.json` (classes and
provenance). The store is built in a temporary sibling folder and swapped in at the end, so an
interrupted run leaves the previous store intact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.config import Params
from robustmer.data.store import StoreWriter
from robustmer.errors import DataError
from robustmer.features.base import ExtractedFeature
from robustmer.io import atomic_dir, read_json

log = logging.getLogger(__name__)


def read_raw_corpus(raw_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    meta_path, info_path = raw_dir / "metadata.csv", raw_dir / "corpus.json"
    for path in (meta_path, info_path):
        if not path.is_file():
            raise DataError(f"{path} is missing; run `robustmer acquire` (or `dvc repro acquire`)")
    frame = pd.read_csv(meta_path, keep_default_na=False, dtype={"sample_id": str, "speaker": str})
    return frame, read_json(info_path)


def _media_paths(raw_dir: Path, frame: pd.DataFrame, column: str) -> list[Path] | None:
    if column not in frame.columns:
        return None
    paths = [raw_dir / p for p in frame[column]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{len(missing)} {column} file(s) listed in {raw_dir / 'metadata.csv'} do not exist: "
            f"{shown}; re-run `robustmer acquire` or fix the paths"
        )
    return paths


def video_fps(path: Path) -> float | None:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    return float(fps) if fps and fps > 0 else None


def manifest_from_metadata(raw_dir: Path, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Manifest columns of the store; media paths become relative to the project root."""
    manifest = frame.copy()
    if "source" not in manifest.columns:
        manifest["source"] = source
    for column in ("audio_path", "video_path"):
        if column in manifest.columns:
            manifest[column] = [(raw_dir / p).as_posix() for p in manifest[column]]
    return manifest


def extract(params: Params, raw_dir: Path, out_dir: Path) -> Path:
    """Extract every modality the corpus has into the store at `out_dir`."""
    from robustmer.features.audio import extract_audio
    from robustmer.features.text import extract_text
    from robustmer.features.video import extract_video

    cfg = params["extract"]
    frame, info = read_raw_corpus(raw_dir)
    features: list[ExtractedFeature] = []
    audio_paths = _media_paths(raw_dir, frame, "audio_path")
    if audio_paths:
        features += extract_audio(audio_paths, cfg["audio"], cfg["workers"])
    video_paths = _media_paths(raw_dir, frame, "video_path")
    if video_paths:
        features += extract_video(
            video_paths, cfg["video"], cfg["workers"], fps=video_fps(video_paths[0])
        )
    if "text" in frame.columns:
        from robustmer.training.loop import resolve_device

        device = str(resolve_device(params["device"]))
        features += extract_text(list(frame["text"]), cfg["text"], device)

    with atomic_dir(out_dir) as tmp:
        writer = StoreWriter(tmp, info.get("dataset", params["dataset"]), info["classes"])
        writer.write_manifest(manifest_from_metadata(raw_dir, frame, params["dataset"]))
        for feat in features:
            writer.add_feature(feat.meta, feat.sequences)
            log.info("%s: dim %d, %d frames", feat.meta.name, feat.meta.dim, feat.meta.n_frames)
        writer.finalize({"raw_corpus": {"path": raw_dir.as_posix(), "info": info}})
    return out_dir
