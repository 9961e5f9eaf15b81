"""Render the whole built-in corpus: media files, metadata.csv and corpus.json.

Each utterance draws its randomness from streams named by its sample id, so the output is the
same whichever worker renders it and however many workers there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.builtin.design import CLASSES, Utterance, check_cfg, design_corpus
from robustmer.data.builtin.face import render_frames
from robustmer.data.builtin.media import write_mp4, write_wav
from robustmer.data.builtin.speech import synthesize
from robustmer.data.builtin.transcripts import make_transcript
from robustmer.data.protocol import WITHHELD_COLUMN
from robustmer.io import atomic_path, sha256_file, write_json
from robustmer.progress import track
from robustmer.seeding import rng
from robustmer.workers import worker_pool

GENERATOR_VERSION = "1.0.0"
SOURCE = "builtin"


@dataclass(frozen=True)
class _Task:
    utt: Utterance
    seed: int
    out_dir: Path
    sample_rate: int
    fps: int
    size: int


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _render(task: _Task) -> dict[str, Any]:
    """Write one utterance's wav and mp4; return its rendering latents and file hashes."""
    utt = task.utt
    samples, timeline, voice = synthesize(
        utt, task.sample_rate, rng(task.seed, utt.sample_id, "audio")
    )
    frames, face = render_frames(
        utt, timeline, task.size, task.fps, rng(task.seed, utt.sample_id, "video")
    )
    audio_rel, video_rel = f"audio/{utt.sample_id}.wav", f"video/{utt.sample_id}.mp4"
    write_wav(task.out_dir / audio_rel, samples, task.sample_rate)
    write_mp4(task.out_dir / video_rel, frames, task.fps)
    return {
        "audio_path": audio_rel,
        "video_path": video_rel,
        "gen_n_syllables": timeline.n_syllables,
        "gen_f0_hz": round(utt.speaker.f0_hz * 2 ** (voice.f0_shift_st / 12), 2),
        "gen_level_db": round(voice.level_db + utt.speaker.level_db, 2),
        "gen_rate_sps": round(timeline.n_syllables / utt.duration_s, 3),
        "gen_open_quotient": round(voice.open_quotient, 3),
        "gen_smile": round(face.smile, 4),
        "gen_brow_inner": round(face.brow_inner, 4),
        "gen_brow_raise": round(face.brow_raise, 4),
        "gen_head_motion": round(face.head_motion, 4),
        "sha256": {
            audio_rel: sha256_file(task.out_dir / audio_rel),
            video_rel: sha256_file(task.out_dir / video_rel),
        },
    }


def _clear_previous(out_dir: Path) -> None:
    """Drop the media and the completion markers of an earlier run before writing anew."""
    for name in ("corpus.json", "metadata.csv"):
        (out_dir / name).unlink(missing_ok=True)
    for sub in ("audio", "video"):
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() or path.is_symlink():
                    path.unlink()
        folder.mkdir(parents=True, exist_ok=True)


def _render_all(tasks: list[_Task], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(tasks) < 2 * workers:
        _init_worker()
        return list(track(map(_render, tasks), len(tasks), "builtin corpus", "utt"))
    chunksize = max(1, len(tasks) // (workers * 8))
    with worker_pool(workers, _init_worker) as pool:
        rendered = pool.map(_render, tasks, chunksize=chunksize)
        return list(track(rendered, len(tasks), "builtin corpus", "utt"))


def _row(utt: Utterance, text: str, rendered: dict[str, Any]) -> dict[str, Any]:
    return {
        "sample_id": utt.sample_id,
        "speaker": utt.speaker.speaker,
        "gender": utt.speaker.gender,
        "fold": utt.speaker.fold,
        "label": utt.label,
        "valence": utt.valence,
        "arousal": utt.arousal,
        "text": text,
        "audio_path": rendered["audio_path"],
        "video_path": rendered["video_path"],
        "source": SOURCE,
        "gen_intensity": utt.intensity,
        "gen_expr_audio": utt.expr_audio,
        "gen_expr_video": utt.expr_video,
        "gen_expr_text": utt.expr_text,
        "gen_strength_audio": round(utt.strength_audio, 4),
        "gen_strength_video": round(utt.strength_video, 4),
        "gen_text_cue": utt.text_cue,
        "gen_text_cue_class": utt.text_cue_class,
        "gen_duration_s": round(utt.duration_s, 4),
        "gen_n_frames": utt.n_frames,
        **{k: v for k, v in rendered.items() if k.startswith("gen_")},
    }


def generate_corpus(
    out_dir: Path, cfg: dict[str, Any], seed: int, workers: int = 1
) -> pd.DataFrame:
    """Write the corpus into `out_dir` and return its metadata (the rows of metadata.csv).

    `cfg` is params["acquire"]["builtin"] with defaults filled in. Media first, then
    metadata.csv, then corpus.json, whose presence marks a complete corpus.
    """
    out_dir = Path(out_dir)
    check_cfg(cfg)
    utterances = design_corpus(cfg, seed)
    texts = [make_transcript(u, rng(seed, u.sample_id, "text")) for u in utterances]
    _clear_previous(out_dir)
    tasks = [
        _Task(u, seed, out_dir, cfg["sample_rate"], cfg["video_fps"], cfg["video_size"])
        for u in utterances
    ]
    rendered = _render_all(tasks, workers)
    rows = [_row(u, t, r) for u, t, r in zip(utterances, texts, rendered, strict=True)]
    metadata = withhold_labels(pd.DataFrame(rows), float(cfg.get("unlabelled_fraction", 0)), seed)
    with atomic_path(out_dir / "metadata.csv", suffix=".csv") as tmp:
        metadata.to_csv(tmp, index=False)
    hashes = {path: digest for r in rendered for path, digest in r["sha256"].items()}
    write_json(
        out_dir / "corpus.json",
        {
            "dataset": SOURCE,
            "generator": "robustmer.data.builtin",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "cfg": dict(cfg),
            "classes": list(CLASSES),
            "n_samples": len(metadata),
            "n_speakers": int(metadata["speaker"].nunique()),
            # the size of the unlabelled pool, when there is one (the store declares it)
            **({"unlabelled": n_pool} if (n_pool := int((metadata["label"] == "").sum())) else {}),
            "sha256": dict(sorted(hashes.items())),
        },
    )
    return metadata


def withhold_labels(metadata: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Put `fraction` of each speaker's utterances into the unlabelled pool (label "").

    Drawn per speaker from the master seed, not stratified by class (a real pool leaves the
    labelled set somewhat unbalanced, which the SEMI recipe's oversampling is for). The true
    class stays in `withheld_label`, so pseudo-labels can be scored; no model trains on it.
    Media and every other column are unchanged.
    """
    if fraction <= 0:
        return metadata  # no pool: the corpus is exactly the fully labelled one
    out = metadata.copy()
    out[WITHHELD_COLUMN] = ""
    for speaker, rows in out.groupby("speaker", sort=True).groups.items():
        rows = np.asarray(rows)
        n = round(fraction * len(rows))
        chosen = rng(seed, "unlabelled", str(speaker)).choice(rows, size=n, replace=False)
        out.loc[chosen, WITHHELD_COLUMN] = out.loc[chosen, "label"]
        out.loc[chosen, "label"] = ""
    return out
