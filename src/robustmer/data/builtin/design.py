"""The latent model of the built-in corpus: speakers, labels, intensity and per-modality strength.

Every random draw comes from a named seed stream (`robustmer.seeding.rng(seed, name, ...)`), so a
speaker's traits or an utterance's latents depend only on the seed and that name, never on the
order of the draws or on which worker process renders the media.

Generative story (numbers are documented in docs/builtin_corpus.md):
  speaker  -> gender, voice (F0, vocal tract length, rate, breathiness), face (geometry, colours,
              resting expression), overall expressivity
  utterance -> class (balanced per speaker), intensity, valence/arousal = centroid * intensity +
              noise, and one expressiveness per modality drawn independently, so one channel can
              be flat while another is clear
  text     -> cue strength (strong / mild / weak) from the text expressiveness, or, for a share
              of each speaker's utterances, no cue or a contradictory one
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robustmer import CLASSES_BUILTIN
from robustmer.errors import ConfigError
from robustmer.seeding import rng

CLASSES: tuple[str, ...] = CLASSES_BUILTIN
# (valence, arousal) of a full-intensity utterance of each class.
CENTROIDS: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.75, 0.55),
    "angry": (-0.65, 0.75),
    "sad": (-0.70, -0.55),
}
INTENSITY_RANGE = (0.45, 1.0)  # emotional classes; neutral has intensity 0
VA_NOISE_SD = 0.08
NEUTRAL_VA_LIMIT = 0.2
MIN_ABS_VA = 0.05  # emotional utterances keep the sign of their class centroid
# chance that a modality is (nearly) flat for an utterance (audio, video, text)
FLAT_PROBABILITY = (0.2, 0.2, 0.3)
FLAT_RANGE = (0.0, 0.2)
EXPRESSIVE_RANGE = (0.5, 1.0)
# text expressiveness at or above these gives a strong / mild cue; below, a weak (valence) cue
STRONG_CUE_THRESHOLD = 0.75
MILD_CUE_THRESHOLD = 0.35
CONTRADICTORY_SHARE = 1 / 3  # of the ambiguous transcripts; the rest carry no cue
BGR = tuple[int, int, int]
REQUIRED_KEYS = (
    "n_speakers",
    "utterances_per_speaker",
    "n_folds",
    "sample_rate",
    "min_duration_s",
    "max_duration_s",
    "video_fps",
    "video_size",
    "ambiguous_text_fraction",
)


@dataclass(frozen=True)
class Speaker:
    """Traits fixed for all utterances of one speaker (voice, face, expressivity)."""

    speaker: str
    index: int
    gender: str  # "F" or "M"
    fold: int
    expressivity: float  # multiplies every modality's expressiveness
    # voice
    f0_hz: float
    formant_scale: float  # shorter vocal tract -> higher formants (female ~1.15)
    rate_sps: float  # syllables per second when neutral
    breathiness: float
    level_db: float
    # face (fractions of the frame side unless noted)
    face_width: float
    face_aspect: float  # height / width
    eye_spacing: float  # fraction of face width
    eye_size: float  # fraction of face width
    mouth_width: float  # fraction of face width
    brow_thickness: float  # fraction of face width
    rest_smile: float  # resting mouth-corner lift, same unit as the emotional one
    rest_brow: float  # resting brow height offset, fraction of face height
    skin_bgr: BGR
    hair_bgr: BGR
    iris_bgr: BGR
    lip_bgr: BGR
    bg_top_bgr: BGR
    bg_bottom_bgr: BGR
    shirt_bgr: BGR


@dataclass(frozen=True)
class Utterance:
    """The latent description of one utterance; the renderers map it to signals."""

    sample_id: str
    speaker: Speaker
    label: str
    intensity: float
    valence: float
    arousal: float
    expr_audio: float
    expr_video: float
    expr_text: float
    text_cue: str  # strong | mild | weak | none | contradictory
    text_cue_class: str  # class whose words appear in the transcript ("" for none)
    n_frames: int
    duration_s: float

    @property
    def strength_audio(self) -> float:
        return self.intensity * self.expr_audio

    @property
    def strength_video(self) -> float:
        return self.intensity * self.expr_video


def check_cfg(cfg: dict[str, Any]) -> None:
    """Fail early (with the key) on a cfg that cannot give a valid corpus."""
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ConfigError(f"acquire.builtin lacks {missing}; load params through robustmer.config")
    if cfg["min_duration_s"] > cfg["max_duration_s"]:
        raise ConfigError(
            f"acquire.builtin.min_duration_s ({cfg['min_duration_s']}) exceeds max_duration_s "
            f"({cfg['max_duration_s']})"
        )
    if cfg["n_speakers"] < cfg["n_folds"]:
        raise ConfigError(
            f"acquire.builtin.n_speakers ({cfg['n_speakers']}) < n_folds ({cfg['n_folds']}): "
            "every fold needs at least one speaker; raise n_speakers or lower n_folds"
        )


def speaker_ids(n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"spk{i:0{width}d}" for i in range(n)]


def sample_ids(speaker: str, n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"{speaker}_u{j:0{width}d}" for j in range(n)]


def fold_of(index: int, n_folds: int) -> int:
    """Speakers are dealt round-robin, so fold sizes differ by at most one speaker."""
    return index % n_folds


def gender_of(index: int, n_folds: int) -> str:
    """Alternate along and across folds, so each fold with two or more speakers mixes genders."""
    return "F" if (index % n_folds + index // n_folds) % 2 == 0 else "M"


def _bgr(values: np.ndarray | tuple[float, ...]) -> BGR:
    b, g, r = (int(np.clip(v, 0, 255)) for v in values)
    return b, g, r


def make_speaker(seed: int, name: str, index: int, n_folds: int) -> Speaker:
    g = rng(seed, "speaker", name)
    gender = gender_of(index, n_folds)
    female = gender == "F"
    # skin: one lightness axis from dark to light, slight hue variation
    light = g.uniform(0.0, 1.0)
    dark_skin, light_skin = np.array([70, 100, 150]), np.array([175, 200, 235])
    skin = _bgr(dark_skin + light * (light_skin - dark_skin) + g.normal(0, 6, 3))
    hair_level = g.uniform(20, 90) if light < 0.5 else g.uniform(25, 140)
    bg_base = g.uniform(90, 200, 3)
    return Speaker(
        speaker=name,
        index=index,
        gender=gender,
        fold=fold_of(index, n_folds),
        expressivity=float(g.uniform(0.8, 1.15)),
        f0_hz=float(g.uniform(185, 235) if female else g.uniform(95, 135)),
        formant_scale=float(g.uniform(1.10, 1.22) if female else g.uniform(0.93, 1.03)),
        rate_sps=float(g.uniform(3.8, 4.8)),
        breathiness=float(g.uniform(0.0, 0.08)),
        level_db=float(g.uniform(-3.0, 3.0)),
        face_width=float(g.uniform(0.54, 0.62)),
        face_aspect=float(g.uniform(1.22, 1.34)),
        eye_spacing=float(g.uniform(0.36, 0.42)),
        eye_size=float(g.uniform(0.17, 0.21)),
        mouth_width=float(g.uniform(0.36, 0.46) if female else g.uniform(0.40, 0.50)),
        brow_thickness=float(g.uniform(0.035, 0.05) if female else g.uniform(0.045, 0.065)),
        rest_smile=float(g.uniform(-0.12, 0.12)),
        rest_brow=float(g.uniform(-0.012, 0.012)),
        skin_bgr=skin,
        hair_bgr=_bgr((hair_level * 0.7, hair_level * 0.85, hair_level)),
        iris_bgr=_bgr(
            np.array((40, 60, 90) if g.uniform() < 0.7 else (120, 100, 60)) + g.normal(0, 12, 3)
        ),
        lip_bgr=_bgr(np.array(skin) * [0.62, 0.55, 0.85]),
        bg_top_bgr=_bgr(bg_base),
        bg_bottom_bgr=_bgr(bg_base * g.uniform(0.6, 0.9)),
        shirt_bgr=_bgr(g.uniform(30, 200, 3)),
    )


def _expressiveness(g: np.random.Generator, flat_probability: float, speaker_scale: float) -> float:
    low, high = FLAT_RANGE if g.uniform() < flat_probability else EXPRESSIVE_RANGE
    return float(np.clip(g.uniform(low, high) * speaker_scale, 0.0, 1.0))


def _valence_arousal(g: np.random.Generator, label: str, intensity: float) -> tuple[float, float]:
    out = []
    for centre in CENTROIDS[label]:
        if label == "neutral":
            value = float(np.clip(g.normal(0, VA_NOISE_SD), -NEUTRAL_VA_LIMIT, NEUTRAL_VA_LIMIT))
        else:
            magnitude = max(abs(centre) * intensity + g.normal(0, VA_NOISE_SD), MIN_ABS_VA)
            value = float(math.copysign(min(magnitude, 1.0), centre))
        out.append(round(value, 4))
    return out[0], out[1]


def _frames_and_duration(g: np.random.Generator, cfg: dict[str, Any]) -> tuple[int, float]:
    """Durations are whole video frames so audio and video end together."""
    fps, lo, hi = cfg["video_fps"], cfg["min_duration_s"], cfg["max_duration_s"]
    first, last = math.ceil(lo * fps - 1e-9), math.floor(hi * fps + 1e-9)
    if first <= last:
        n = int(g.integers(first, last + 1))
        return n, n / fps
    duration = float(g.uniform(lo, hi))
    return max(1, round(duration * fps)), duration


def design_corpus(cfg: dict[str, Any], seed: int) -> list[Utterance]:
    """All utterance latents in corpus order (speaker, then utterance index)."""
    check_cfg(cfg)
    n_utt = cfg["utterances_per_speaker"]
    utterances: list[Utterance] = []
    for index, name in enumerate(speaker_ids(cfg["n_speakers"])):
        speaker = make_speaker(seed, name, index, cfg["n_folds"])
        g_spk = rng(seed, "labels", name)
        labels = [CLASSES[j % len(CLASSES)] for j in range(n_utt)]
        labels = [labels[j] for j in g_spk.permutation(n_utt)]
        n_ambiguous = round(cfg["ambiguous_text_fraction"] * n_utt)
        ambiguous = set(g_spk.permutation(n_utt)[:n_ambiguous].tolist())
        for j, sample_id in enumerate(sample_ids(name, n_utt)):
            g = rng(seed, "latent", sample_id)
            label = labels[j]
            intensity = 0.0 if label == "neutral" else float(g.uniform(*INTENSITY_RANGE))
            valence, arousal = _valence_arousal(g, label, intensity)
            expr = [_expressiveness(g, p, speaker.expressivity) for p in FLAT_PROBABILITY]
            if j in ambiguous:
                if g.uniform() < CONTRADICTORY_SHARE:
                    cue = "contradictory"
                    cue_class = str(g.choice([c for c in CLASSES if c != label]))
                else:
                    cue, cue_class = "none", ""
            else:
                cue = (
                    "strong"
                    if expr[2] >= STRONG_CUE_THRESHOLD
                    else "mild"
                    if expr[2] >= MILD_CUE_THRESHOLD
                    else "weak"
                )
                cue_class = label
            n_frames, duration = _frames_and_duration(g, cfg)
            utterances.append(
                Utterance(
                    sample_id=sample_id,
                    speaker=speaker,
                    label=label,
                    intensity=round(intensity, 4),
                    valence=valence,
                    arousal=arousal,
                    expr_audio=round(expr[0], 4),
                    expr_video=round(expr[1], 4),
                    expr_text=round(expr[2], 4),
                    text_cue=cue,
                    text_cue_class=cue_class,
                    n_frames=n_frames,
                    duration_s=duration,
                )
            )
    return utterances


def express(
    neutral: Any,
    target: Any,
    strength: float,
    nuisance_sd: dict[str, float],
    rng: np.random.Generator,
) -> dict[str, float]:
    """Rendering parameters `strength` of the way from a neutral to an emotional preset.

    Both presets are dataclasses with the same fields; per-utterance nuisance variation
    (drawn in `nuisance_sd` order, which fixes the random stream) carries no emotion.
    """
    a, b = asdict(neutral), asdict(target)
    values = {k: a[k] + strength * (b[k] - a[k]) for k in a}
    for key, sd in nuisance_sd.items():
        values[key] += rng.normal(0, sd)
    return values
