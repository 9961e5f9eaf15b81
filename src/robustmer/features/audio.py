"""Audio features with openSMILE: eGeMAPS (or ComParE) functionals per utterance and LLD frames.

openSMILE's wheel carries the library and its configs, so this runs offline. Both feature levels
are computed from one read of each file, at the file's own sample rate (openSMILE resamples
internally as its configs need, and that is what the published eGeMAPS numbers use).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robustmer.features.base import (
    Extractor,
    MediaError,
    OutputSpec,
)
from robustmer.features.kinds import kind_defaults
from robustmer.features.media import AudioSource, check_options, is_bool, read_audio

log = logging.getLogger(__name__)

LLD_FRAME_RATE = 100.0  # openSMILE eGeMAPS / ComParE LLDs: 10 ms hop
FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016")


class OpenSmileExtractor(Extractor):
    """`audio/<name>_functionals` (utterance) and `audio/<name>_lld` (frames at 100 Hz)."""

    modality = "audio"
    kind = "opensmile"
    defaults: ClassVar[dict[str, Any]] = kind_defaults("opensmile")  # declared in kinds.py

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        check_options(
            self,
            {
                "feature_set": (lambda v: v in FEATURE_SETS, f"one of {list(FEATURE_SETS)}"),
                "vad": (is_bool, "true or false"),
            },
        )

    def setup(self) -> None:
        import opensmile

        fs = getattr(opensmile.FeatureSet, self.cfg["feature_set"])
        self._functionals = opensmile.Smile(
            feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals
        )
        self._lld = opensmile.Smile(
            feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        )

    def version(self) -> str:
        import opensmile

        text = f"opensmile {opensmile.__version__}"
        if self.cfg["vad"]:
            from robustmer.features.vad import vad_version

            text += f"; {vad_version()}"
        return text

    def outputs(self) -> list[OutputSpec]:
        func = list(self._functionals.feature_names)
        lld = list(self._lld.feature_names)
        return [
            OutputSpec("_functionals", "utterance", len(func), feature_names=func),
            OutputSpec("_lld", "frame", len(lld), LLD_FRAME_RATE, feature_names=lld),
        ]

    def features(self, path: Path | AudioSource) -> tuple[np.ndarray, np.ndarray]:
        """`[1, D]` functionals and `[T, D_lld]` LLDs of one file (or in-memory source)."""
        signal, rate = read_audio(path)
        if self.cfg["vad"]:
            from robustmer.features.vad import trim_silence

            signal = trim_silence(signal, rate, str(path))
        func = self._functionals.process_signal(signal, rate).to_numpy(np.float32)
        lld = self._lld.process_signal(signal, rate).to_numpy(np.float32)
        if not (np.isfinite(func).all() and np.isfinite(lld).all()):
            raise MediaError(
                str(path),
                f"openSMILE gave NaN/inf features ({len(signal) / rate:.3f} s of audio: too short "
                "or silent?); re-acquire the file or remove the utterance",
            )
        return func.reshape(1, -1), lld

    def extract(self, items: Sequence[Path]) -> list[dict[str, np.ndarray]]:
        out = []
        for path in items:
            func, lld = self.features(path)
            out.append({"_functionals": func, "_lld": lld})
        return out


# --------------------------------------------------------------------------------------------
