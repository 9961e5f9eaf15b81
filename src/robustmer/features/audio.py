"""Audio features with openSMILE: eGeMAPS (or ComParE) functionals per utterance and LLD frames.

openSMILE's wheel carries the library and its configs, so this runs offline. Both feature levels
are computed from one read of each wav.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustmer.data.store import FeatureMeta
from robustmer.errors import DataError
from robustmer.features.base import ExtractedFeature, parallel_map

LLD_FRAME_RATE = 100.0  # openSMILE eGeMAPS / ComParE LLDs: 10 ms hop
_SMILE: dict[str, Any] = {}


def _init_smile(feature_set: str) -> None:
    import opensmile

    fs = getattr(opensmile.FeatureSet, feature_set)
    _SMILE["functionals"] = opensmile.Smile(
        feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals
    )
    _SMILE["lld"] = opensmile.Smile(
        feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the rate; a clear error for unreadable or empty files."""
    import soundfile as sf

    try:
        signal, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise DataError(
            f"{path}: cannot read audio ({exc}); re-acquire the file or remove the utterance "
            "from the dataset's metadata"
        ) from exc
    if signal.shape[0] == 0:
        raise DataError(f"{path}: audio file has no samples; re-acquire or remove it")
    return signal.mean(axis=1), int(rate)


def _one(path: Path) -> tuple[np.ndarray, np.ndarray]:
    signal, rate = read_wav(path)
    func = _SMILE["functionals"].process_signal(signal, rate).to_numpy(np.float32)
    lld = _SMILE["lld"].process_signal(signal, rate).to_numpy(np.float32)
    return func.reshape(1, -1), lld


def feature_names(feature_set: str) -> tuple[list[str], list[str]]:
    _init_smile(feature_set)
    return list(_SMILE["functionals"].feature_names), list(_SMILE["lld"].feature_names)


def extract_audio(paths: list[Path], cfg: dict[str, Any], workers: int) -> list[ExtractedFeature]:
    """`audio/<set>_functionals` (utterance) and `audio/<set>_lld` (frames at 100 Hz)."""
    import opensmile

    feature_set = cfg["feature_set"]
    out = parallel_map(_one, paths, workers, "audio (openSMILE)", _init_smile, (feature_set,))
    func_names, lld_names = feature_names(feature_set)
    tag = "egemaps" if feature_set.startswith("eGeMAPS") else "compare"
    common = {"version": f"opensmile {opensmile.__version__}", "params": dict(cfg)}
    return [
        ExtractedFeature(
            FeatureMeta(
                "audio",
                f"{tag}_functionals",
                "utterance",
                len(func_names),
                feature_names=func_names,
                **common,
            ),
            [f for f, _ in out],
        ),
        ExtractedFeature(
            FeatureMeta(
                "audio",
                f"{tag}_lld",
                "frame",
                len(lld_names),
                frame_rate=LLD_FRAME_RATE,
                feature_names=lld_names,
                **common,
            ),
            [lld for _, lld in out],
        ),
    ]
