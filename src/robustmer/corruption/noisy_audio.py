"""One utterance mixed with noise in memory: what a raw-noise audio level hands the extractors.

A `NoisyAudio` names its clean file, the noise and the random state to draw it with, and mixes
when an extraction worker reads it (`read()`), so the reading, mixing and extraction of a level
all run in the extraction workers and no scratch WAV is written. The mix is quantised as the
16-bit WAV the condition used to write (`raw_noise.as_pcm16`), so the features are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from robustmer.corruption import raw_noise
from robustmer.errors import DataError
from robustmer.features.media import AudioSource, read_audio

BABBLE_TALKERS = 4


@lru_cache(maxsize=4)
def _noise_folder(folder: str, rate: int) -> list[np.ndarray]:
    """A noise folder at one rate, read once per worker process."""
    return raw_noise.load_noise_folder(Path(folder), rate)


@dataclass(frozen=True)
class NoisyAudio(AudioSource):
    """`path` mixed with `kind` noise at `snr_db`, drawn from the generator state `state`.

    `others`: the babble talkers' files (chosen by the caller with the same generator, whose
    state after that choice is `state`); `folder`: the noise folder of kind "folder".
    """

    path: str
    kind: str
    snr_db: float
    state: dict[str, Any]
    others: tuple[str, ...] = ()
    folder: str | None = None

    def __str__(self) -> str:
        return f"{self.path} (with {self.kind} noise at {self.snr_db:g} dB)"

    def read(self) -> tuple[np.ndarray, int]:
        signal, rate = read_audio(self.path)
        draw = np.random.default_rng()
        draw.bit_generator.state = self.state
        if self.kind == "white":
            noise = raw_noise.white_noise(len(signal), draw)
        elif self.kind == "pink":
            noise = raw_noise.pink_noise(len(signal), draw)
        elif self.kind == "babble":
            talkers = [read_audio(p) for p in self.others]
            rates = {r for _, r in talkers}
            if rates != {rate}:
                raise DataError(
                    f"{self.path}: babble talkers have sample rates {sorted(rates)} against "
                    f"its {rate}; resample the corpus to one rate"
                )
            noise = raw_noise.babble_noise([t for t, _ in talkers], len(signal), draw,
                                           BABBLE_TALKERS)  # fmt: skip
        else:
            assert self.folder is not None
            noise = raw_noise.fit_noise_length(_noise_folder(self.folder, rate), len(signal), draw)
        mixed, _ = raw_noise.mix_at_snr(signal, noise, self.snr_db)
        return raw_noise.as_pcm16(mixed), rate


def noisy_audio(
    paths: list[Path],
    speakers: np.ndarray,
    index: int,
    kind: str,
    snr_db: float,
    seed: int,
    folder: Path | None = None,
) -> NoisyAudio:
    """Utterance `index` of the corpus with its noise: the babble talkers (other speakers' files,
    twice as many as talkers so short ones can be skipped) are chosen here, from `seed`."""
    draw = np.random.default_rng(seed)
    others: tuple[str, ...] = ()
    if kind == "babble":
        candidates = np.flatnonzero(speakers != speakers[index])
        chosen = draw.choice(candidates, size=min(BABBLE_TALKERS * 2, len(candidates)),
                             replace=False)  # fmt: skip
        others = tuple(str(paths[j]) for j in chosen)
    return NoisyAudio(str(paths[index]), kind, float(snr_db), draw.bit_generator.state, others,
                      None if folder is None else str(folder))  # fmt: skip
