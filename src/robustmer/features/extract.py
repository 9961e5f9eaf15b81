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
from robustmer.io import atomic_dir, read_json, write_json

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
    if "text" not in manifest.columns:
        manifest["text"] = ""  # a corpus without transcripts (EmoDB, RAVDESS): no text feature
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
    corpus_path = raw_dir / "corpus.json"
    if corpus_path.is_file() and read_json(corpus_path).get("kind") == "pack":
        return convert_pack(read_json(corpus_path), out_dir)
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


def convert_pack(corpus: dict[str, Any], out_dir: Path) -> Path:
    """A feature pack's `extract`: convert the (unchanged) pack into the canonical store."""
    from robustmer.data.acquire import check_unchanged
    from robustmer.data.registry import dataset_info

    info = dataset_info(corpus["dataset"])
    source = check_unchanged(corpus)
    with atomic_dir(out_dir) as tmp:
        summary = info.adapter_fn()(source, tmp, corpus.get("options") or {})
        store_info = read_json(tmp / "store.json")
        provenance = {k: v for k, v in corpus.items() if k != "files"}
        store_info["raw_corpus"] = {"path": source.as_posix(), "info": provenance}
        write_json(tmp / "store.json", store_info)
    log.info("converted %s into %s: %s", corpus["dataset"], out_dir, summary)
    return out_dir
