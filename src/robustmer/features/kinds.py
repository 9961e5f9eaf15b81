"""Extractor kinds as plain data: modality, implementing class (a dotted path) and options.

Kept apart from features/registry.py, which imports the classes, so that loading params can
check `extract.<modality>.<entry>` option names for every stage while depending on this file
only; the classes take their `defaults` from here (one list per kind).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODALITIES = ("audio", "video", "text")


@dataclass(frozen=True)
class Kind:
    modality: str
    target: str  # "package.module:Class"
    torch: bool = False  # runs a torch model: on a GPU it runs in the main process, batched
    options: Mapping[str, Any] = field(default_factory=dict)  # every option -> its default


KINDS: dict[str, Kind] = {
    "opensmile": Kind(
        "audio",
        "robustmer.features.audio:OpenSmileExtractor",
        options={"feature_set": "eGeMAPSv02", "vad": False},
    ),
    "logmel": Kind(
        "audio",
        "robustmer.features.logmel:LogMelExtractor",
        options={"n_mels": 64, "win_ms": 25, "hop_ms": 10, "sample_rate": 16000, "vad": False},
    ),
    "hf_speech": Kind(
        "audio",
        "robustmer.features.hf_speech:HFSpeechExtractor",
        torch=True,
        options={"model_path": None, "chunk_s": 10, "layers": 4, "vad": False},
    ),
    "sentence": Kind(
        "text",
        "robustmer.features.text:SentenceExtractor",
        torch=True,
        options={"model": "minilm", "batch_size": 64, "normalize": True},
    ),
    "hf_text": Kind(
        "text",
        "robustmer.features.hf_text:HFTextExtractor",
        torch=True,
        options={"model_path": None, "layers": 4, "max_length": 512, "batch_size": 16},
    ),
    "face_hog": Kind(
        "video",
        "robustmer.features.video:FaceHogExtractor",
        options={
            "frame_step": 1,
            "frames": 0,
            "crop_size": 32,
            "min_face_size": 24,
            "detect_every": 3,
            "detect_max_side": 320,
            "scale_factor": 1.2,
        },
    ),
    "hf_image": Kind(
        "video",
        "robustmer.features.hf_image:HFImageExtractor",
        torch=True,
        options={"model_path": None, "frames": 8, "face": True, "batch_size": 32},
    ),
}


def kind_defaults(kind: str) -> dict[str, Any]:
    """A kind's options and their defaults (an extractor class's `defaults`)."""
    return dict(KINDS[kind].options)
