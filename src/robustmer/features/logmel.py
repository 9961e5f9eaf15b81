"""Log-mel filterbank frames (the classic input of CNN / LSTM speech emotion models).

Built with torch.stft and an HTK-scale triangular filterbank made here, so no torchaudio or
librosa is needed: power spectrum of Hann-windowed frames (FFT size the next power of two of the
window, frames centred on multiples of the hop with zero padding at the ends), mel energies from
0 Hz to Nyquist, then log(energy + 1e-6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robustmer.features.base import Extractor, OutputSpec
from robustmer.features.kinds import kind_defaults
from robustmer.features.media import check_options, is_bool, is_int, is_number, load_audio

LOG_FLOOR = 1e-6  # keeps digital silence finite; about -138 dB re full-scale power


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """`[n_fft // 2 + 1, n_mels]` triangular filters, equally spaced on the HTK mel scale, peak 1.

    Filter m rises from centre m-1 to centre m and falls to centre m+1 (centres in Hz).
    """
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (bins[None, :] - low) / (centre - low)
    fall = (high - bins[None, :]) / (high - centre)
    return np.maximum(0.0, np.minimum(rise, fall)).T.astype(np.float32)


class LogMelExtractor(Extractor):
    """`audio/<name>`: `[T, n_mels]` log-mel frames at 1000 / hop_ms Hz."""

    modality = "audio"
    kind = "logmel"
    defaults: ClassVar[dict[str, Any]] = kind_defaults("logmel")  # declared in kinds.py

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        check_options(
            self,
            {
                "n_mels": (is_int(1, 512), "an integer in [1, 512]"),
                "win_ms": (is_number(0.0, 1000.0), "milliseconds in (0, 1000]"),
                "hop_ms": (is_number(0.0, 1000.0), "milliseconds in (0, 1000]"),
                "sample_rate": (is_int(1000), "an integer >= 1000 (Hz)"),
                "vad": (is_bool, "true or false"),
            },
        )
        rate = self.cfg["sample_rate"]
        self.win = max(1, round(rate * self.cfg["win_ms"] / 1000))
        self.hop = max(1, round(rate * self.cfg["hop_ms"] / 1000))
        self.n_fft = 1 << (self.win - 1).bit_length()

    def setup(self) -> None:
        import torch

        self._fb = torch.from_numpy(
            mel_filterbank(self.cfg["n_mels"], self.n_fft, self.cfg["sample_rate"])
        )
        self._window = torch.hann_window(self.win, periodic=True)

    def version(self) -> str:
        import torch

        text = f"robustmer log-mel 1 (HTK mel, n_fft {self.n_fft}); torch {torch.__version__}"
        if self.cfg["vad"]:
            from robustmer.features.vad import vad_version

            text += f"; {vad_version()}"
        return text

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("", "frame", self.cfg["n_mels"], 1000.0 / self.cfg["hop_ms"])]

    def logmel(self, signal: np.ndarray) -> np.ndarray:
        """`[1 + len // hop, n_mels]` float32 log-mel frames of a mono signal."""
        import torch

        with torch.no_grad():
            spec = torch.stft(
                torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)),
                self.n_fft,
                hop_length=self.hop,
                win_length=self.win,
                window=self._window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # [freq, T]
            mel = self._fb.T @ power
            return torch.log(mel + LOG_FLOOR).T.contiguous().numpy().astype(np.float32)

    def extract(self, items: Sequence[Path]) -> list[dict[str, np.ndarray]]:
        out = []
        for path in items:
            signal = load_audio(path, self.cfg["sample_rate"])
            if self.cfg["vad"]:
                from robustmer.features.vad import trim_silence

                signal = trim_silence(signal, self.cfg["sample_rate"], str(path))
            out.append({"": self.logmel(signal)})
        return out
