"""Self-supervised speech features (wav2vec 2.0, HuBERT, WavLM, data2vec-audio; Whisper's encoder)
from a local Hugging Face model folder, following the MER2024 recipe.

16 kHz mono audio is cut into `chunk_s` chunks (attention cost grows with the square of the
length, and long files would not fit in memory); each chunk goes through the model on its own,
the feature is the sum of the last `layers` hidden states, and the chunks' frames are
concatenated. Whisper always encodes 30 s of log-mel input: only the frames that cover the
chunk's real audio are kept, not those of the padding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robustmer.errors import ConfigError
from robustmer.features.base import Extractor, OutputSpec
from robustmer.features.kinds import kind_defaults
from robustmer.features.media import (
    check_options,
    is_bool,
    is_int,
    is_number,
    load_audio,
    local_model_dir,
    model_description,
)

log = logging.getLogger(__name__)

WHISPER_CONV_STRIDE = 2  # the encoder's second conv halves the 100 Hz log-mel frame rate


def conv_output_length(length: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Frames the wav2vec-style conv feature encoder gives for `length` samples (no padding)."""
    for k, s in zip(kernels, strides, strict=True):
        length = (length - k) // s + 1
    return max(length, 0)


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Samples one output frame sees: the shortest input that yields a frame."""
    field = 1
    for k, s in zip(reversed(kernels), reversed(strides), strict=True):
        field = (field - 1) * s + k
    return field


def chunk_spans(n: int, size: int, min_len: int) -> list[tuple[int, int]]:
    """`[start, end)` spans of `size` samples covering `n`; a last span shorter than `min_len`
    joins the one before (a few ms of tail would give no frame on its own)."""
    spans = [(s, min(s + size, n)) for s in range(0, max(n, 1), size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_len:
        spans[-2:] = [(spans[-2][0], spans[-1][1])]
    return spans


class HFSpeechExtractor(Extractor):
    """`audio/<name>`: `[T, D]` frames (50 Hz for the usual models) of a local speech model."""

    modality = "audio"
    kind = "hf_speech"
    defaults: ClassVar[dict[str, Any]] = kind_defaults("hf_speech")  # declared in kinds.py

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        check_options(
            self,
            {
                "chunk_s": (is_number(0.0), "seconds > 0"),
                "layers": (is_int(1), "an integer >= 1"),
                "vad": (is_bool, "true or false"),
            },
        )
        self.model_dir = local_model_dir(self.cfg["model_path"], f"extract.audio.{name}")

    def setup(self) -> None:
        import torch
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        where = f"extract.audio.{self.name}"
        path = str(self.model_dir)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.whisper = config.model_type == "whisper"
        if self.whisper:
            from transformers import WhisperFeatureExtractor, WhisperModel

            self._fe = WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
            model = WhisperModel.from_pretrained(path, local_files_only=True).get_encoder()
            self.sample_rate = int(self._fe.sampling_rate)
            self._hop = int(self._fe.hop_length) * WHISPER_CONV_STRIDE
            n_layers = config.encoder_layers
            self._dim = int(config.d_model)
            if self.cfg["chunk_s"] * self.sample_rate > self._fe.n_samples:
                raise ConfigError(
                    f"{where}.chunk_s = {self.cfg['chunk_s']}: Whisper encodes at most "
                    f"{self._fe.n_samples / self.sample_rate:g} s at a time; use a smaller chunk_s"
                )
        else:
            model = AutoModel.from_pretrained(path, local_files_only=True)
            if getattr(model, "main_input_name", "") != "input_values" or not hasattr(
                config, "conv_stride"
            ):
                raise ConfigError(
                    f"{where}.model_path: {path} holds a {config.model_type!r} model, not a "
                    "speech encoder (wav2vec 2.0, HuBERT, WavLM, data2vec-audio or Whisper)"
                )
            try:
                self._fe = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
            except (OSError, ValueError):
                log.warning("%s: no preprocessor_config.json in %s; raw samples go in", where, path)
                self._fe = None
            self.sample_rate = int(getattr(self._fe, "sampling_rate", 16000))
            self._kernels, self._strides = list(config.conv_kernel), list(config.conv_stride)
            self._hop = math.prod(self._strides)
            n_layers = config.num_hidden_layers
            self._dim = int(config.hidden_size)
        if self.cfg["layers"] > n_layers + 1:
            raise ConfigError(
                f"{where}.layers = {self.cfg['layers']}: the model has only {n_layers + 1} hidden "
                f"states (embeddings + {n_layers} layers)"
            )
        torch.manual_seed(0)
        self._model = model.to(self.device).eval()

    def version(self) -> str:
        import torch
        import transformers

        text = (
            f"transformers {transformers.__version__}; torch {torch.__version__}; "
            f"{model_description(self.model_dir)}"
        )
        if self.cfg["vad"]:
            from robustmer.features.vad import vad_version

            text += f"; {vad_version()}"
        return text

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self._hop

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("", "frame", self._dim, self.frame_rate)]

    def expected_frames(self, n_samples: int) -> int:
        """Frames `features` returns for a signal of `n_samples` (chunking included)."""
        return sum(self._chunk_frames(e - s) for s, e in self._spans(n_samples))

    def _min_len(self) -> int:
        return self._hop if self.whisper else receptive_field(self._kernels, self._strides)

    def _spans(self, n: int) -> list[tuple[int, int]]:
        size = max(1, round(self.cfg["chunk_s"] * self.sample_rate))
        return chunk_spans(n, size, self._min_len())

    def _chunk_frames(self, n: int) -> int:
        if self.whisper:
            return max(1, math.ceil(n / self._hop))
        return conv_output_length(max(n, self._min_len()), self._kernels, self._strides)

    def _encode(self, chunk: np.ndarray) -> np.ndarray:
        """`[T, D]` sum of the last `layers` hidden states of one chunk."""
        import torch

        if self.whisper:
            inputs = self._fe(chunk, sampling_rate=self.sample_rate, return_tensors="pt")
            x = inputs["input_features"]
        else:
            if len(chunk) < self._min_len():  # shorter than one frame's receptive field
                chunk = np.pad(chunk, (0, self._min_len() - len(chunk)))
            if self._fe is not None:
                x = self._fe(chunk, sampling_rate=self.sample_rate, return_tensors="pt")
                x = x["input_values"]
            else:
                x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))[None]
        with torch.no_grad():
            hidden = self._model(x.to(self.device), output_hidden_states=True).hidden_states
            summed = torch.stack(hidden[-self.cfg["layers"] :]).sum(0)[0]
        out = summed.float().cpu().numpy()
        return out[: self._chunk_frames(len(chunk))] if self.whisper else out

    def features(self, signal: np.ndarray) -> np.ndarray:
        """`[T, D]` frames of a mono signal at `sample_rate`, chunk by chunk."""
        parts = [self._encode(signal[s:e]) for s, e in self._spans(len(signal))]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def extract(self, items: Sequence[Path]) -> list[dict[str, np.ndarray]]:
        out = []
        for path in items:
            signal = load_audio(path, self.sample_rate)
            if self.cfg["vad"]:
                from robustmer.features.vad import trim_silence

                signal = trim_silence(signal, self.sample_rate, str(path))
            out.append({"": self.features(signal)})
        return out
