"""The syllable timeline of an utterance, shared by the voice and the face.

The speech synthesiser reads voicing, frication, formant targets and pitch accents from it; the
face renderer reads the jaw opening, so the mouth moves with the syllables that are heard.
All tracks live on a 200 Hz control grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTROL_RATE = 200  # control frames per second

# Vowel formants F1-F4 (Hz) of an adult male vocal tract and jaw opening (0 closed .. 1 open).
VOWELS: dict[str, tuple[tuple[float, float, float, float], float]] = {
    "a": ((730.0, 1090.0, 2440.0, 3400.0), 1.0),
    "e": ((530.0, 1840.0, 2480.0, 3500.0), 0.6),
    "i": ((280.0, 2250.0, 2950.0, 3600.0), 0.3),
    "o": ((570.0, 860.0, 2410.0, 3350.0), 0.7),
    "u": ((310.0, 870.0, 2240.0, 3300.0), 0.35),
    "@": ((500.0, 1500.0, 2500.0, 3450.0), 0.5),
}
# Onset consonants: (voicing amplitude, frication amplitude, jaw opening, closure share).
CONSONANTS: dict[str, tuple[float, float, float, float]] = {
    "stop": (0.0, 0.6, 0.05, 0.7),  # closure silence, then a short burst
    "fric": (0.0, 0.45, 0.2, 0.0),
    "nasal": (0.3, 0.0, 0.05, 0.0),
    "approx": (0.6, 0.0, 0.35, 0.0),
    "none": (1.0, 0.0, 0.5, 0.0),
}
CONSONANT_LOCUS = (450.0, 1500.0, 2500.0, 3450.0)


@dataclass
class Timeline:
    """Control tracks of one utterance (length `n_ctrl`, at CONTROL_RATE)."""

    duration_s: float
    voicing: np.ndarray  # amplitude of the glottal source
    frication: np.ndarray  # amplitude of the fricative / burst noise
    formants: np.ndarray  # [n_ctrl, 4] Hz before speaker scaling
    jaw: np.ndarray  # mouth opening 0..1 for the face
    accent: np.ndarray  # pitch-accent shape 0..1
    n_syllables: int

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.voicing)) / CONTROL_RATE


def _smooth(x: np.ndarray, width_s: float) -> np.ndarray:
    n = max(1, round(width_s * CONTROL_RATE))
    if n == 1:
        return x
    kernel = np.hanning(n + 2)[1:-1]
    kernel /= kernel.sum()
    pad = [(n, n)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    if x.ndim == 1:
        return np.convolve(xp, kernel, mode="same")[n:-n]
    return np.stack(
        [np.convolve(xp[:, k], kernel, mode="same")[n:-n] for k in range(x.shape[1])], 1
    )


def plan_timeline(
    duration_s: float, rate_sps: float, rng: np.random.Generator, sharpness: float = 0.5
) -> Timeline:
    """Lay syllables (onset consonant + vowel) over the speech part of the utterance.

    `rate_sps` sets the syllable count; `sharpness` (0..1) makes the energy envelope more
    abrupt (angry speech) or rounder (sad speech).
    """
    n_ctrl = int(np.ceil(duration_s * CONTROL_RATE)) + 1
    lead, trail = rng.uniform(0.08, 0.2), rng.uniform(0.06, 0.18)
    speech = max(duration_s - lead - trail, 0.3)
    n_syl = max(2, round(speech * rate_sps))
    stressed = rng.uniform(size=n_syl) < 0.35
    stressed[rng.integers(n_syl)] = True
    weights = rng.uniform(0.75, 1.25, n_syl) * np.where(stressed, 1.3, 1.0)
    pause = 0.0
    pause_after = -1
    if n_syl >= 6 and rng.uniform() < 0.6:
        pause = rng.uniform(0.08, 0.16)
        pause_after = int(rng.integers(2, n_syl - 2))
    lengths = weights / weights.sum() * (speech - pause)

    voicing = np.zeros(n_ctrl)
    frication = np.zeros(n_ctrl)
    jaw = np.zeros(n_ctrl)
    accent = np.zeros(n_ctrl)
    formants = np.tile(np.array(CONSONANT_LOCUS), (n_ctrl, 1))
    vowel_names = list(VOWELS)
    cons_names = list(CONSONANTS)
    cons_p = np.array([0.3, 0.25, 0.15, 0.15, 0.15])
    t = lead
    exponent = 0.25 + 0.6 * (1 - sharpness)
    for k in range(n_syl):
        start, end = t, t + lengths[k]
        cons = cons_names[rng.choice(len(cons_names), p=cons_p)]
        vowel = vowel_names[rng.integers(len(vowel_names))]
        v_formants, v_open = VOWELS[vowel]
        c_voice, c_fric, c_open, c_closure = CONSONANTS[cons]
        c_share = 0.0 if cons == "none" else rng.uniform(0.2, 0.38)
        nucleus = start + c_share * (end - start)
        i0, i1, i2 = (round(x * CONTROL_RATE) for x in (start, nucleus, end))
        i1, i2 = max(i1, i0), max(i2, i1 + 1)
        i2 = min(i2, n_ctrl)
        if i1 > i0:
            closure = i0 + round(c_closure * (i1 - i0))
            voicing[i0:i1] = c_voice
            frication[closure:i1] = c_fric
            jaw[i0:i1] = c_open * v_open
        level = 1.0 if stressed[k] else rng.uniform(0.6, 0.8)
        x = (np.arange(i1, i2) - i1 + 0.5) / max(i2 - i1, 1)
        shape = np.sin(np.pi * np.clip(x * 0.9 + 0.05, 0, 1)) ** exponent
        voicing[i1:i2] = level * shape
        jaw[i1:i2] = v_open * level * shape
        formants[i1:i2] = v_formants
        if stressed[k]:
            accent[i1:i2] = np.sin(np.pi * x) ** 0.8
        t = end + (pause if k == pause_after else 0.0)
    formants = _smooth(formants, 0.04)
    voicing = _smooth(voicing, 0.02)
    frication = _smooth(frication, 0.01)
    jaw = _smooth(jaw, 0.05)
    accent = _smooth(accent, 0.06)
    return Timeline(duration_s, voicing, frication, formants, jaw, accent, n_syl)
