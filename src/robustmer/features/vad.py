"""Silence trimming with silero-vad (the model ships inside the wheel; nothing is downloaded).

Leading and trailing silence adds frames that carry no emotion and, for utterance functionals,
dilutes the statistics; trimming keeps everything from the first to the last speech segment
(pauses inside the utterance stay). When no speech is found the signal is returned unchanged,
because dropping a whole utterance is the stage's decision, not the trimmer's.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from robustmer.features.media import resample

log = logging.getLogger(__name__)

VAD_RATES = (16000, 8000)  # the rates silero-vad is trained for
_MODEL: dict[str, Any] = {}


def _model() -> Any:
    """The silero TorchScript model, loaded once per process (workers each load their own)."""
    if "vad" not in _MODEL:
        from silero_vad import load_silero_vad

        _MODEL["vad"] = load_silero_vad()
    return _MODEL["vad"]


def vad_version() -> str:
    from importlib.metadata import version

    return f"silero-vad {version('silero-vad')}"


def speech_span(signal: np.ndarray, rate: int) -> tuple[int, int] | None:
    """`(start, end)` sample indices (in `rate`) from the first speech onset to the last offset,
    or None when silero finds no speech. Other rates are resampled to 16 kHz for detection only.
    """
    import torch
    from silero_vad import get_speech_timestamps

    detect_rate = rate if rate in VAD_RATES else VAD_RATES[0]
    probe = resample(np.asarray(signal, np.float32), rate, detect_rate)
    with torch.no_grad():
        segments = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(probe)), _model(), sampling_rate=detect_rate
        )
    if not segments:
        return None
    start, end = segments[0]["start"], segments[-1]["end"]
    if detect_rate != rate:
        start = int(np.floor(start * rate / detect_rate))
        end = int(np.ceil(end * rate / detect_rate))
    return max(0, start), min(len(signal), end)


def trim_silence(signal: np.ndarray, rate: int, item: str = "") -> np.ndarray:
    """`signal` from its first to its last speech segment; unchanged (with a log line naming
    `item`) when there is no speech, so a silent file still gets features."""
    span = speech_span(signal, rate)
    if span is None:
        log.warning("VAD found no speech in %s; features use the whole signal", item or "a signal")
        return signal
    return signal[span[0] : span[1]]
