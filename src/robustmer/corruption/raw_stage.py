"""Raw-media conditions: corrupt each utterance's audio, video or transcript, then re-extract.

For every level the modality's extractors from params.yaml `extract` run on the corrupted media
through the same code as clean media
(`robustmer.features.extract.extract_modality`), and the result is written as an overlay store
(same manifest, only the re-extracted features). Audio is mixed in memory by the extraction
workers as they read each item (`corruption.noisy_audio`: no scratch files, reading and mixing
in parallel); video clips are written to a scratch folder, since the video readers take files.
Evaluation reads the clean store
and swaps in the overlay's features, so the rest of the pipeline is unchanged. A level that
leaves a modality untouched (blur rate 1, fraction 0) reuses the clean features instead of
re-encoding the media. Only the rows a model is scored on are corrupted: an unlabelled pool row
(label "", the built-in corpus's 70%) is never a test row, so it keeps its clean features in the
overlay. Each record carries its own seed, so the labelled rows get the same noise either way.

The per-item feature cache is not used here (`cache=None`): corrupted media are fresh bytes,
and a condition is regenerated mostly when its settings, the seed or the extractors change,
which misses the cache anyway. The rare rerun that could hit does not justify one cache file per
sample, level and condition left on disk for good. Bad items follow `extract.on_error` as on
clean media; placeholders are recorded in the overlay.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from robustmer.config import Params
from robustmer.corruption import raw_noise
from robustmer.corruption.conditions import Condition
from robustmer.corruption.noisy_audio import noisy_audio
from robustmer.data.store import FeatureStore, StoreWriter
from robustmer.errors import DataError
from robustmer.features.base import ExtractedFeature, parallel_map
from robustmer.features.extract import (
    Extraction,
    bad_items_error,
    extract_modality,
    write_placeholders,
)
from robustmer.features.media import AudioSource

log = logging.getLogger(__name__)


def build_overlay(
    params: Params,
    cond: Condition,
    records: pd.DataFrame,
    store: FeatureStore,
    out_dir: Path,
    modalities: Sequence[str] | None = None,
) -> list[str]:
    """Write the overlay store of one level into `out_dir`; return the feature names written.

    `modalities`: the condition's raw modalities that the dataset has (default: all of them).
    """
    manifest = store.manifest
    result = Extraction()
    scored = records[_scored(records, manifest)]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".media-", dir=out_dir.parent) as scratch:
        work = Path(scratch)
        for modality in cond.raw_modalities if modalities is None else modalities:
            if _is_identity(records, modality):
                result.features += _clean_features(store, modality)
                continue
            if modality == "audio":
                part = _noisy_audio(params, cond, scored, manifest)
            elif modality == "video":
                part = _noisy_video(params, scored, manifest, work)
            else:
                part = _noisy_text(params, cond, scored, manifest)
            result += _with_clean_pool(part, store, scored)
    if result.bad and params["extract"]["on_error"] != "placeholder":
        raise bad_items_error(result.bad)
    features = result.features
    writer = StoreWriter(out_dir, store.dataset, store.classes)
    writer.write_manifest(manifest)
    for feat in features:
        writer.add_feature(feat.meta, feat.sequences)
    write_placeholders(out_dir, result.placeholders)
    writer.finalize(
        {
            "overlay_of": store.info["manifest_sha256"],
            "condition": cond.name,
            "level": str(records["level"].iloc[0]),
            # the same rows as the clean store, so the same unlabelled pool (label "")
            **({"unlabelled": store.info["unlabelled"]} if store.info.get("unlabelled") else {}),
        }
    )
    return sorted(f.meta.name for f in features)


def _scored(records: pd.DataFrame, manifest: pd.DataFrame) -> np.ndarray:
    """Which records are of labelled rows: the only ones any evaluation predicts."""
    labels = manifest["label"].fillna("").astype(str).to_numpy()
    return labels[records["sample_index"].to_numpy(int)] != ""


def _with_clean_pool(part: Extraction, store: FeatureStore, rows: pd.DataFrame) -> Extraction:
    """`part` holds the features of `rows` only: complete each to every manifest row, with the
    clean store's features for the rows left out (the unlabelled pool)."""
    index = rows["sample_index"].to_numpy(int)
    if len(index) == len(store.manifest):
        return part
    for feat in part.features:
        full = store.sequences(feat.meta.name)
        for i, sequence in zip(index, feat.sequences, strict=True):
            full[i] = sequence
        feat.sequences = full
    return part


def _is_identity(records: pd.DataFrame, modality: str) -> bool:
    if modality == "video":
        return bool(
            (records["blur_rate"] == 1).all() and (records["fraction"].fillna(0) == 0).all()
        )
    if modality == "text":
        return bool((records["fraction"].fillna(0) == 0).all())
    return False


def _clean_features(store: FeatureStore, modality: str) -> list[ExtractedFeature]:
    out = []
    for name in store.feature_names():
        if name.startswith(f"{modality}/"):
            out.append(ExtractedFeature(store.meta(name), store.sequences(name)))
    return out


def _reextract(
    params: Params,
    modality: str,
    items: Sequence[Path | str | AudioSource],
    records: pd.DataFrame,
    manifest: pd.DataFrame,
) -> Extraction:
    """The clean stage's extraction of one modality, on the corrupted items (no cache)."""
    ids = manifest["sample_id"].astype(str).to_numpy()[records["sample_index"].to_numpy(int)]
    return extract_modality(
        modality,
        items,
        params["extract"],
        sample_ids=ids.tolist(),
        device=params["device"],
        workers=params["corrupt"]["workers"],
        cache=None,
    )


def _media(manifest: pd.DataFrame, column: str) -> list[Path]:
    if column not in manifest.columns:
        raise DataError(
            f"the store's manifest has no `{column}`, so this dataset has no raw media to "
            "corrupt; use feature-level conditions (missing_*, feature_noise) for it"
        )
    paths = [Path(p) for p in manifest[column]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} raw media file(s) named in the store manifest are gone (first: "
            f"{missing[0]}); re-run `robustmer acquire` so raw-noise conditions can read them"
        )
    return paths


def _noisy_audio(
    params: Params,
    cond: Condition,
    records: pd.DataFrame,
    manifest: pd.DataFrame,
) -> Extraction:
    """Each record's mix, made in memory by the extraction workers as they read it."""
    paths = _media(manifest, "audio_path")
    kind = str(records["noise_kind"].iloc[0])
    folder = Path(cond.cfg["noise_folder"]) if kind == "folder" else None
    speakers = manifest["speaker"].astype(str).to_numpy()
    items = [
        noisy_audio(
            paths, speakers, int(rec.sample_index), kind, float(rec.snr_db), int(rec.seed), folder
        )
        for rec in records.itertuples(index=False)
    ]
    return _reextract(params, "audio", items, records, manifest)


def _corrupt_clip(job: tuple[str, str, int, str, float, int]) -> str:
    """One clip: blur, drop frames or occlude as its record says; runs in a worker process."""
    src, dst, blur, kind, fraction, seed = job
    frames, fps = raw_noise.read_video(Path(src))
    draw = np.random.default_rng(seed)
    if blur != 1:
        frames = raw_noise.blur_frames(frames, blur)
    if kind == "video_frame_drop" and fraction > 0:
        frames = raw_noise.drop_frames(frames, fraction, draw)
    elif kind == "video_occlusion" and fraction > 0:
        frames = raw_noise.occlude_frames(frames, fraction, draw)
    raw_noise.write_video(Path(dst), frames, fps)
    return dst


def _noisy_video(
    params: Params, records: pd.DataFrame, manifest: pd.DataFrame, work: Path
) -> Extraction:
    paths = _media(manifest, "video_path")
    (work / "video").mkdir(parents=True, exist_ok=True)
    jobs = [
        (
            str(paths[int(rec.sample_index)]),
            str(work / "video" / f"{int(rec.sample_index):06d}.mp4"),
            int(rec.blur_rate),
            str(rec.kind),
            0.0 if pd.isna(rec.fraction) else float(rec.fraction),
            int(rec.seed),
        )
        for rec in records.itertuples(index=False)
    ]
    workers = params["corrupt"]["workers"]
    out = [Path(p) for p in parallel_map(_corrupt_clip, jobs, workers, "corrupt video")]
    return _reextract(params, "video", out, records, manifest)


def _noisy_text(
    params: Params, cond: Condition, records: pd.DataFrame, manifest: pd.DataFrame
) -> Extraction:
    texts = manifest["text"].fillna("").astype(str).tolist()
    vocabulary = raw_noise.corpus_vocabulary(texts)
    out = []
    for rec in records.itertuples(index=False):
        text = texts[int(rec.sample_index)]
        draw = np.random.default_rng(int(rec.seed))
        if cond.kind == "text_word_drop":
            out.append(raw_noise.drop_words(text, float(rec.fraction), draw))
        else:
            out.append(raw_noise.substitute_words(text, float(rec.fraction), draw, vocabulary))
    return _reextract(params, "text", out, records, manifest)
