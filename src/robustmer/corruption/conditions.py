"""Named evaluation conditions: per-sample records of what is missing and how inputs are noisy.

A condition from params.yaml (`corrupt.conditions.<name>`) has a `kind` and usually `levels`.
`build_records` turns it into one table with a row per evaluated sample and level, drawn once
from the master seed, so every model is scored on identical masks and noise:

- `present_audio/video/text`: which modalities the model receives. How a model sees a missing
  one (zeros, noise, a learned token, its own recovery) is the model's business.
- `t_audio/t_video/t_text`: feature-noise timestep per modality (-1 = clean), applied in the
  model's normalised input space with `noise_kind`, `schedule` and `num_steps` (= the level T).
- `snr_db`, `noise_kind`, `blur_rate`, `fraction`: raw-media corruption, applied by
  `robustmer.corruption.raw_stage` before features are re-extracted; `fraction` is also the
  share of frames `temporal_drop` removes from frame-level features (`corruption/temporal.py`,
  at evaluation, with the condition's `mode` and `modalities`).
- `seed`: this row's own seed; every random draw made for the row derives from it.

Rows are samples in manifest order, except `missing_pattern`, whose level is a pattern and whose
rows are the whole set once per pattern (the MMIN/NMER test set expanded 6x, results per pattern),
and `feature_noise` with `patterns: true` (NMER's WA-vs-T protocol), whose rows are each sample
once per pattern with that pattern's missing modalities noised at intensity T.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from robustmer import MODALITIES
from robustmer.corruption import masks
from robustmer.errors import ConfigError
from robustmer.seeding import derive_seed, rng

# Conditions whose corruption is applied to raw media; the value is what gets re-extracted.
RAW_KINDS: dict[str, tuple[str, ...]] = {
    "audio_noise": ("audio",),
    "video_blur": ("video",),
    "video_frame_drop": ("video",),
    "video_occlusion": ("video",),
    "text_word_drop": ("text",),
    "text_substitution": ("text",),
    "mer_noise": ("audio", "video"),
}
_NEEDS_LEVELS = {
    "missing_rate",
    "imder_schedule",
    "feature_noise",
    "temporal_drop",
    *RAW_KINDS.keys() - {"mer_noise"},
}
# What a level means per kind, for tables and curve axes.
LEVEL_NAMES = {
    "clean": "condition",
    "missing_rate": "missing rate",
    "missing_pattern": "pattern",
    "imder_schedule": "missing rate (IMDer schedule)",
    "feature_noise": "noise intensity T",
    "audio_noise": "SNR (dB)",
    "video_blur": "blur rate",
    "video_frame_drop": "dropped frame fraction",
    "video_occlusion": "occluded area fraction",
    "text_word_drop": "dropped word fraction",
    "text_substitution": "substituted word fraction",
    "mer_noise": "MER-NOISE draw",
    "temporal_drop": "removed frame fraction",
}

RECORD_COLUMNS = (
    "condition", "kind", "level", "level_value", "row", "sample_index", "sample_id",
    *(f"present_{m}" for m in MODALITIES),
    *(f"t_{m}" for m in MODALITIES),
    "noise_kind", "schedule", "num_steps", "snr_db", "blur_rate", "fraction", "seed",
)  # fmt: skip


@dataclass(frozen=True)
class Condition:
    """One entry of `corrupt.conditions`, with the defaults of the params schema filled in."""

    name: str
    kind: str
    cfg: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], name: str) -> Condition:
        conditions = params["corrupt"]["conditions"]
        if name not in conditions:
            known = ", ".join(sorted(conditions))
            raise ConfigError(
                f"condition {name!r} is not in params.yaml `corrupt.conditions` (known: {known})"
            )
        cfg = dict(conditions[name])
        kind = cfg.pop("kind")
        if kind in _NEEDS_LEVELS and not cfg.get("levels"):
            raise ConfigError(f"condition {name!r} ({kind}) needs `levels`")
        if kind == "temporal_drop":
            cfg.setdefault("mode", "random")
        elif "mode" in cfg:
            raise ConfigError(f"condition {name!r}: `mode` is a temporal_drop setting, not {kind}")
        if kind in ("feature_noise", "audio_noise") and "noise" not in cfg:
            cfg["noise"] = "gaussian" if kind == "feature_noise" else "white"
        _check_noise(name, kind, cfg)
        return cls(name, kind, cfg)

    @property
    def raw_modalities(self) -> tuple[str, ...]:
        """Modalities whose features are re-extracted from corrupted media (empty if none)."""
        return RAW_KINDS.get(self.kind, ())

    def levels(self) -> list[tuple[str, float]]:
        """(label, numeric value) per level; value NaN where a level is not a number."""
        if self.kind == "clean":
            return [("clean", math.nan)]
        if self.kind == "missing_pattern":
            return [(p, math.nan) for p in masks.SIX_PATTERNS]
        if self.kind == "mer_noise":
            low, high = self.cfg["snr_range"]
            rates = "-".join(str(r) for r in self.cfg["blur_rates"])
            return [(f"snr{low}-{high}_blur{rates}", math.nan)]
        return [(level_label(v), float(v)) for v in self.cfg["levels"]]


def level_label(value: float) -> str:
    """A stable text form of a numeric level: 0.1 -> '0.1', 20.0 -> '20'."""
    return f"{float(value):g}"


def _check_noise(name: str, kind: str, cfg: dict[str, Any]) -> None:
    noise = cfg.get("noise")
    allowed = {
        "feature_noise": {"gaussian", "impulse"},
        "audio_noise": {"white", "pink", "babble", "folder"},
    }.get(kind)
    if allowed is not None and noise not in allowed:
        raise ConfigError(f"condition {name!r}: noise {noise!r} is not one of {sorted(allowed)}")
    if kind == "audio_noise" and noise == "folder" and not cfg.get("noise_folder"):
        raise ConfigError(
            f"condition {name!r}: noise: folder needs `noise_folder` (e.g. the MUSAN speech/ "
            "folder); or use the built-in white, pink or babble noise"
        )
    if kind == "missing_rate" and not all(0 <= v <= 1 for v in cfg["levels"]):
        raise ConfigError(f"condition {name!r}: missing rates must lie in [0, 1]")
    if kind == "imder_schedule":
        for v in cfg["levels"]:
            if abs(v * 10 - round(v * 10)) > 1e-9 or not 0 <= v <= 0.7:
                raise ConfigError(
                    f"condition {name!r}: IMDer schedule levels are 0.0, 0.1, ..., 0.7 (got {v})"
                )


def build_records(
    cond: Condition,
    manifest: pd.DataFrame,
    master_seed: int,
    modalities: Sequence[str] = MODALITIES,
) -> pd.DataFrame:
    """The condition's per-row records for every level (columns: RECORD_COLUMNS).

    `modalities`: those the dataset has. Random missingness is drawn over them only (at least
    one of them kept, the cap (M-1)/M of that M), so an audio + video corpus never "keeps" only
    its absent text; a modality the dataset lacks is recorded present (there is nothing to
    withhold and no model reads it). With all three the draws are exactly those of before.
    """
    ids = manifest["sample_id"].astype(str).to_numpy()
    own = [j for j, m in enumerate(MODALITIES) if m in modalities]
    frames = []
    for label, value in cond.levels():
        stream = ("corrupt", cond.name, label)
        if cond.kind == "missing_pattern":
            frames.append(_pattern_rows(cond, label, ids, master_seed))
            continue
        n = len(ids)
        rec = _base_rows(cond, label, value, np.arange(n), ids, master_seed)
        draw = rng(master_seed, *stream)
        if cond.kind == "missing_rate":
            present = np.ones((n, len(MODALITIES)), dtype=bool)
            present[:, own] = masks.random_drop(n, value, draw, n_modalities=len(own))
            _set_present(rec, present)
        elif cond.kind == "imder_schedule":
            present = masks.imder_batch_schedule(
                n, cond.cfg["batch_size"], value, draw, released_mr0=cond.cfg["released_mr0"]
            )
            _set_present(rec, present)
        elif cond.kind == "feature_noise":
            if cond.cfg.get("patterns"):
                frames.append(_noise_pattern_rows(cond, label, value, ids, master_seed))
                continue
            _set_noise(cond, rec, value)
            for m in cond.cfg["modalities"]:
                rec[f"t_{m}"] = draw.integers(0, int(value), size=n)
        elif cond.kind == "audio_noise":
            rec["noise_kind"], rec["snr_db"] = cond.cfg["noise"], value
        elif cond.kind == "video_blur":
            _check_blur(cond, value)
            rec["blur_rate"] = int(value)
        elif cond.kind in ("video_frame_drop", "video_occlusion", "text_word_drop",
                           "text_substitution", "temporal_drop"):  # fmt: skip
            if not 0 <= value < 1:
                raise ConfigError(f"condition {cond.name!r}: fractions must be in [0, 1)")
            rec["fraction"] = value
        elif cond.kind == "mer_noise":
            low, high = cond.cfg["snr_range"]
            rec["noise_kind"] = cond.cfg.get("noise", "babble")
            rec["snr_db"] = draw.integers(low, high, size=n, endpoint=True).astype(float)
            rec["blur_rate"] = draw.choice(np.asarray(cond.cfg["blur_rates"]), size=n)
        frames.append(rec)
    out = pd.concat(frames, ignore_index=True)
    return out[list(RECORD_COLUMNS)]


def _base_rows(
    cond: Condition,
    label: str,
    value: float,
    sample_index: np.ndarray,
    ids: np.ndarray,
    master_seed: int,
) -> pd.DataFrame:
    keys = ids[sample_index]
    rec = pd.DataFrame(
        {
            "condition": cond.name,
            "kind": cond.kind,
            "level": label,
            "level_value": value,
            "row": np.arange(len(sample_index), dtype=np.int64),
            "sample_index": sample_index.astype(np.int64),
            "sample_id": keys,
        }
    )
    for m in MODALITIES:
        rec[f"present_{m}"] = True
    for m in MODALITIES:
        rec[f"t_{m}"] = np.int64(-1)
    rec["noise_kind"], rec["schedule"], rec["num_steps"] = "", "", np.int64(0)
    rec["snr_db"], rec["blur_rate"], rec["fraction"] = np.nan, np.int64(1), np.nan
    rec["seed"] = [derive_seed(master_seed, "corrupt", cond.name, label, k) for k in keys]
    rec["seed"] = rec["seed"].astype(np.int64)
    return rec


def _pattern_rows(cond: Condition, label: str, ids: np.ndarray, master_seed: int) -> pd.DataFrame:
    rec = _base_rows(cond, label, math.nan, np.arange(len(ids)), ids, master_seed)
    present = np.tile(np.asarray(masks.SIX_PATTERNS[label], dtype=bool), (len(ids), 1))
    _set_present(rec, present)
    return rec


def _set_noise(cond: Condition, rec: pd.DataFrame, value: float) -> None:
    steps = int(value)
    if steps < 1 or steps != value:
        raise ConfigError(f"condition {cond.name!r}: noise intensity T must be an integer >= 1")
    rec["noise_kind"], rec["schedule"], rec["num_steps"] = (
        cond.cfg["noise"], cond.cfg["schedule"], steps,
    )  # fmt: skip


def _noise_pattern_rows(
    cond: Condition, label: str, value: float, ids: np.ndarray, master_seed: int
) -> pd.DataFrame:
    """NMER's test protocol at intensity T: the set once per pattern (row i is sample i // 6
    with pattern i % 6), the pattern's missing modalities noised, every modality delivered.

    Missing modalities are replaced by noise rather than withheld, so `present_*` stays True
    and every model, NMER and the baselines alike, sees exactly the same noisy inputs.
    """
    n, k = len(ids), len(masks.SIX_PATTERNS)
    index = np.repeat(np.arange(n), k)
    rec = _base_rows(cond, label, value, index, ids, master_seed)
    rec["seed"] = [
        derive_seed(master_seed, "corrupt", cond.name, label, key, i % k)
        for i, key in enumerate(rec["sample_id"])
    ]
    rec["seed"] = rec["seed"].astype(np.int64)
    _set_noise(cond, rec, value)
    missing = ~np.tile(np.asarray(list(masks.SIX_PATTERNS.values()), dtype=bool), (n, 1))
    draw = rng(master_seed, "corrupt", cond.name, label)
    for j, m in enumerate(MODALITIES):
        t = draw.integers(0, int(value), size=len(rec))
        rec[f"t_{m}"] = np.where(missing[:, j], t, -1).astype(np.int64)
    return rec


def _set_present(rec: pd.DataFrame, present: np.ndarray) -> None:
    for j, m in enumerate(MODALITIES):
        rec[f"present_{m}"] = present[:, j].astype(bool)


def _check_blur(cond: Condition, value: float) -> None:
    rate = int(value)
    if rate != value or rate < 1 or rate & (rate - 1):
        raise ConfigError(f"condition {cond.name!r}: blur rates are powers of two (1, 2, 4, ...)")


def present_matrix(records: pd.DataFrame) -> np.ndarray:
    """`[rows, 3]` bool in MODALITIES order."""
    return records[[f"present_{m}" for m in MODALITIES]].to_numpy(dtype=bool)


def level_summary(
    records: pd.DataFrame, modalities: Sequence[str] = MODALITIES
) -> dict[str, dict[str, Any]]:
    """Per level: rows, achieved missing rate over the dataset's `modalities`, and the mean of
    whichever noise fields are set."""
    own = [j for j, m in enumerate(MODALITIES) if m in modalities]
    out: dict[str, dict[str, Any]] = {}
    for label, group in records.groupby("level", sort=False):
        present = present_matrix(group)[:, own]
        info: dict[str, Any] = {
            "rows": len(group),
            "achieved_missing_rate": round(float(1 - present.mean()), 6),
            "min_modalities_kept": int(present.sum(axis=1).min()),
        }
        for column in ("snr_db", "fraction"):
            if group[column].notna().any():
                info[f"mean_{column}"] = round(float(group[column].mean()), 6)
        if (group["blur_rate"] != 1).any():
            info["blur_rates"] = sorted(int(v) for v in group["blur_rate"].unique())
        out[str(label)] = info
    return out
