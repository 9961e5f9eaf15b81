"""Source-filter speech synthesis: a glottal pulse train through a cascade of formant resonators.

Emotion reaches the voice through prosody (F0 level and range, loudness, speaking rate) and voice
quality (open quotient, closing sharpness, spectral tilt, breath noise); the speaker through F0
range and vocal-tract length. The voice is mostly an arousal channel: happy and angry are raised,
loud and fast, sad is low, quiet, slow and breathy; happy and angry differ mainly in voice
quality (bright and modal vs pressed and tense).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from robustmer.data.builtin.articulation import CONTROL_RATE, Timeline, plan_timeline
from robustmer.data.builtin.design import CLASSES, Utterance, express

FILTER_UPDATE_RATE = 100  # formant filter coefficients change this often per second
REFERENCE_DBFS = -28.0  # active-speech RMS of a neutral utterance at speaker level 0 dB
ROOM_NOISE_DBFS = -62.0


@dataclass(frozen=True)
class VoiceParams:
    """Signal parameters of one utterance (what the latents turn into)."""

    f0_shift_st: float  # mean F0 relative to the speaker's, semitones
    accent_st: float  # size of pitch accents, semitones
    level_db: float  # loudness relative to REFERENCE_DBFS
    rate_factor: float  # syllable rate relative to the speaker's neutral rate
    open_quotient: float  # share of the glottal period the folds are open
    closing_share: float  # share of the open phase spent closing (small = abrupt, pressed)
    tilt: float  # one-pole low-pass coefficient on the source (0 bright .. 0.7 dull)
    breath: float  # aspiration noise relative to the voiced source
    jitter: float  # relative F0 perturbation per control frame
    shimmer: float  # relative amplitude perturbation per glottal period
    f1_scale: float
    f2_scale: float
    sharpness: float  # abruptness of syllable energy envelopes


# Voice of each class at full strength (intensity x audio expressiveness = 1); an utterance
# interpolates from the neutral column towards its class by its strength.
# fmt: off
VOICE_TABLE: dict[str, tuple[float, float, float, float]] = {
    #                neutral happy  angry  sad
    "f0_shift_st":   (0.0,   4.0,   3.8,   -2.5),
    "accent_st":     (3.0,   5.5,   5.0,   1.2),
    "level_db":      (0.0,   6.5,   7.0,   -5.0),
    "rate_factor":   (1.0,   1.16,  1.18,  0.72),
    "open_quotient": (0.60,  0.50,  0.46,  0.75),
    "closing_share": (0.30,  0.25,  0.21,  0.45),
    "tilt":          (0.30,  0.12,  0.09,  0.60),
    "breath":        (0.06,  0.04,  0.03,  0.25),
    "jitter":        (0.008, 0.010, 0.012, 0.02),
    "shimmer":       (0.04,  0.05,  0.06,  0.06),
    "f1_scale":      (1.0,   1.04,  1.06,  0.95),
    "f2_scale":      (1.0,   1.04,  1.0,   0.96),
    "sharpness":     (0.5,   0.75,  0.85,  0.1),
}
# fmt: on
EMOTION_VOICE: dict[str, VoiceParams] = {
    label: VoiceParams(**{k: v[i] for k, v in VOICE_TABLE.items()})
    for i, label in enumerate(CLASSES)
}
NEUTRAL_VOICE = EMOTION_VOICE["neutral"]
# Per-utterance variation that carries no emotion (standard deviations).
NUISANCE_SD = {
    "f0_shift_st": 1.0,
    "accent_st": 0.8,
    "level_db": 2.0,
    "rate_factor": 0.06,
    "open_quotient": 0.04,
    "tilt": 0.06,
    "breath": 0.02,
}


def voice_params(utt: Utterance, rng: np.random.Generator) -> VoiceParams:
    values = express(NEUTRAL_VOICE, EMOTION_VOICE[utt.label], utt.strength_audio, NUISANCE_SD, rng)
    values["breath"] = max(values["breath"] + utt.speaker.breathiness, 0.0)
    values["open_quotient"] = float(np.clip(values["open_quotient"], 0.3, 0.85))
    values["tilt"] = float(np.clip(values["tilt"], 0.0, 0.8))
    values["rate_factor"] = max(values["rate_factor"], 0.5)
    values["accent_st"] = max(values["accent_st"], 0.3)
    return VoiceParams(**{k: float(v) for k, v in values.items()})


def _interp(track: np.ndarray, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    return np.interp(t, np.arange(len(track)) / CONTROL_RATE, track)


def _glottal_source(
    f0: np.ndarray, p: VoiceParams, sr: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg-style glottal flow per period and its derivative (lip radiation folded in)."""
    phase = np.cumsum(f0 / sr)
    frac = phase % 1.0
    period = phase.astype(np.int64)
    t_open = p.open_quotient * (1 - p.closing_share)
    t_close = p.open_quotient * p.closing_share
    flow = np.where(
        frac < t_open,
        0.5 * (1 - np.cos(np.pi * frac / t_open)),
        np.where(frac < t_open + t_close, np.cos(0.5 * np.pi * (frac - t_open) / t_close), 0.0),
    )
    flow *= 1 + p.shimmer * rng.standard_normal(period[-1] + 2)[period]
    source = np.diff(flow, prepend=0.0)
    if p.tilt > 0:
        source = signal.lfilter([1 - p.tilt], [1, -p.tilt], source)
    return flow, source / (np.sqrt(np.mean(source**2)) + 1e-12)


def _formant_cascade(
    x: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray, sr: int
) -> np.ndarray:
    """Run `x` through time-varying 2-pole resonators whose coefficients change every block."""
    block = max(1, round(sr / FILTER_UPDATE_RATE))
    n_blocks = int(np.ceil(len(x) / block))
    centres = (np.arange(n_blocks) + 0.5) * block / sr
    grid = np.arange(len(formants)) / CONTROL_RATE
    freq = np.stack([np.interp(centres, grid, formants[:, k]) for k in range(4)], 1)
    freq = np.minimum(freq, 0.45 * sr)
    r = np.exp(-np.pi * bandwidths[None, :] / sr)
    a1 = -2 * r * np.cos(2 * np.pi * freq / sr)
    a2 = np.broadcast_to(r**2, a1.shape)
    sos = np.zeros((n_blocks, 4, 6))
    sos[..., 0] = 1 + a1 + a2  # unity gain at 0 Hz
    sos[..., 3] = 1.0
    sos[..., 4] = a1
    sos[..., 5] = a2
    y = np.empty_like(x)
    zi = np.zeros((4, 2))
    for b in range(n_blocks):
        sl = slice(b * block, (b + 1) * block)
        y[sl], zi = signal.sosfilt(sos[b], x[sl], zi=zi)
    return y


def _bandpass(x: np.ndarray, lo: float, hi: float, sr: int) -> np.ndarray:
    hi = min(hi, 0.45 * sr)
    sos = signal.butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def synthesize(
    utt: Utterance, sr: int, rng: np.random.Generator
) -> tuple[np.ndarray, Timeline, VoiceParams]:
    """16-bit PCM samples of the utterance, its syllable timeline and the voice parameters."""
    p = voice_params(utt, rng)
    spk = utt.speaker
    timeline = plan_timeline(utt.duration_s, spk.rate_sps * p.rate_factor, rng, p.sharpness)
    n = round(utt.duration_s * sr)
    t_ctrl = timeline.times
    # F0 contour (semitones around the speaker mean): accents, declination, slow wander, jitter
    wander = np.cumsum(rng.normal(0, 0.15, len(t_ctrl)))
    wander = wander - np.linspace(wander[0], wander[-1], len(wander))
    declination = -2.0 * t_ctrl / max(utt.duration_s, 1e-3)
    semitones = p.f0_shift_st + p.accent_st * timeline.accent + declination + wander
    f0_ctrl = spk.f0_hz * 2 ** (semitones / 12) * (1 + p.jitter * rng.standard_normal(len(t_ctrl)))
    f0 = _interp(f0_ctrl, n, sr)
    flow, source = _glottal_source(f0, p, sr, rng)
    breath = _bandpass(rng.standard_normal(n), 400, 6000, sr) * (0.3 + 0.7 * flow)
    breath /= np.sqrt(np.mean(breath**2)) + 1e-12
    excitation = _interp(timeline.voicing, n, sr) * (source + p.breath * 3 * breath)
    formants = timeline.formants * spk.formant_scale
    formants[:, 0] *= p.f1_scale
    formants[:, 1] *= p.f2_scale
    bandwidths = np.array([70.0, 90.0, 130.0, 180.0]) * (1 + 2 * p.breath)
    voiced = _formant_cascade(excitation, formants, bandwidths, sr)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12
    fric = _bandpass(rng.standard_normal(n), 2500, 7000, sr)
    fric *= _interp(timeline.frication, n, sr) / (np.sqrt(np.mean(fric**2)) + 1e-12)
    speech = voiced + 0.35 * fric
    active = _interp(timeline.voicing + timeline.frication, n, sr) > 0.2
    rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1.0
    target = 10 ** ((REFERENCE_DBFS + p.level_db + spk.level_db) / 20)
    speech *= target / (rms + 1e-12)
    room = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    room *= 10 ** (ROOM_NOISE_DBFS / 20) / (np.sqrt(np.mean(room**2)) + 1e-12)
    out = speech + room
    peak = np.max(np.abs(out))
    if peak > 0.9:  # soft limiter: loud (angry) speech stays loud but never clips
        out = 0.95 * np.tanh(out / 0.95)
    return np.round(out * 32767).astype(np.int16), timeline, p
