"""Tiny feature packs in the exact layouts their authors distribute (MMIN, MMSA, MERTools).

Each builder writes the files and returns what it wrote, so tests can compare a converted store
with the source arrays value by value.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MMIN_CLASSES = ("ang", "hap", "neu", "sad")
MMIN_FILES = {"audio": "A/comparE.h5", "video": "V/denseface.h5", "text": "L/bert_large.h5"}
MER_CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")


# --- MMIN (IEMOCAP-style HDF5 + target/<cv>/*.npy) -------------------------------------------


@dataclass
class MminPack:
    root: Path
    names: list[str]
    speakers: dict[str, str]
    labels: dict[str, str]
    features: dict[str, dict[str, np.ndarray]]  # modality -> name -> [T, D]
    folds: dict[int, dict[str, list[str]]]  # fold -> role (train/val/test) -> names
    mean: np.ndarray  # [K, D_audio]
    std: np.ndarray
    dims: dict[str, int]
    classes: tuple[str, ...] = MMIN_CLASSES


def iemocap_names(n_sessions: int = 3, per_speaker: int = 5) -> dict[str, str]:
    """IEMOCAP-style utterance ids -> expected speaker (session + gender of the last field)."""
    out = {}
    for s in range(1, n_sessions + 1):
        for g in ("F", "M"):
            for i in range(per_speaker):
                dialog_gender = "M" if i % 2 else "F"  # the dialog prefix need not match
                dialog = f"impro0{i % 3 + 1}" if i < 3 else f"script0{i % 2 + 1}_{i % 3 + 1}"
                out[f"Ses0{s}{dialog_gender}_{dialog}_{g}{i:03d}"] = f"Ses0{s}{g}"
    return out


def build_mmin_pack(
    root: Path,
    *,
    n_folds: int = 3,
    per_speaker: int = 5,
    dims: dict[str, int] | None = None,
    group_modalities: tuple[str, ...] = ("video",),
    int_labels: bool = False,
    flat_names: bool = False,
    seed: int = 0,
) -> MminPack:
    """3 sessions x 2 speakers x 5 utterances; fold f tests session f, validates session f+1.

    `group_modalities` store each utterance as a group holding `feat` (the other accepted
    layout); the text feature has one 0-frame utterance and several shorter than 5 frames.
    """
    import h5py

    dims = dims or {"audio": 13, "video": 7, "text": 11}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    speakers = iemocap_names(n_folds, per_speaker)
    names = sorted(speakers)
    labels = {n: MMIN_CLASSES[k % len(MMIN_CLASSES)] for k, n in enumerate(names)}
    features: dict[str, dict[str, np.ndarray]] = {}
    for modality, rel in MMIN_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        feats = {}
        with h5py.File(path, "w") as h5:
            for k, name in enumerate(names):
                t = 0 if (modality == "text" and k == 0) else int(rng.integers(1, 9))
                arr = rng.normal(size=(t, dims[modality])).astype(np.float32)
                feats[name] = arr
                if modality in group_modalities:
                    group = h5.create_group(name)
                    group.create_dataset("feat", data=arr)
                    group.create_dataset("length", data=t)  # so `feat` must be picked by name
                else:
                    h5.create_dataset(name, data=arr)
        features[modality] = feats
    mean = rng.normal(size=(n_folds, dims["audio"]))
    std = rng.uniform(0.5, 2.0, size=(n_folds, dims["audio"]))
    with h5py.File(root / "A" / "comparE_mean_std.h5", "w") as h5:
        for f in range(n_folds):
            group = h5.create_group(str(f + 1))
            group.create_dataset("mean", data=mean[f])
            group.create_dataset("std", data=std[f])
    session = {n: int(n[4]) for n in names}
    folds: dict[int, dict[str, list[str]]] = {}
    for f in range(1, n_folds + 1):
        val_session = f % n_folds + 1
        roles = {
            "test": [n for n in names if session[n] == f],
            "val": [n for n in names if session[n] == val_session],
            "train": [n for n in names if session[n] not in (f, val_session)],
        }
        folds[f] = roles
        base = root / "target" / str(f)
        base.mkdir(parents=True, exist_ok=True)
        for part, role in (("trn", "train"), ("val", "val"), ("tst", "test")):
            members = list(rng.permutation(roles[role]))
            idx = np.array([MMIN_CLASSES.index(labels[n]) for n in members], dtype=np.int64)
            onehot = np.eye(len(MMIN_CLASSES), dtype=np.float32)[idx]
            np.save(base / f"{part}_label.npy", idx if int_labels else onehot)
            raw = np.array([n.encode() for n in members], dtype="S")
            np.save(base / f"{part}_int2name.npy", raw if flat_names else raw.reshape(-1, 1))
    return MminPack(root, names, speakers, labels, features, folds, mean, std, dict(dims))


# --- MMSA (aligned_50.pkl) ----------------------------------------------------------------------


MMSA_SPLITS = ("train", "valid", "test")


def mmsa_data(
    sizes: tuple[int, int, int] = (8, 3, 4),
    dims: tuple[int, int, int] = (5, 20, 16),
    seq: int = 50,
    seed: int = 0,
    lengths: bool = True,
    learnable: bool = False,
) -> dict[str, dict[str, Any]]:
    """The dict an MMSA aligned pickle holds; a few audio entries are -inf (kept and cut off).

    `learnable`: every text frame also carries `regression_labels` along one fixed direction,
    so the sentiment is linearly readable from the (frame-mean) text feature (the other arrays
    are drawn exactly as without it).
    """
    rng = np.random.default_rng(seed)
    da, dv, dt = dims
    direction = np.random.default_rng(seed + 1).normal(size=dt).astype(np.float32)
    data: dict[str, dict[str, Any]] = {}
    k = 0
    for split, n in zip(MMSA_SPLITS, sizes, strict=True):
        ids = []
        for _ in range(n):
            ids.append(f"vid{k % 5}$_${k}" if k % 4 else f"old{k % 3}_clip_{k}")
            k += 1
        reg = np.round(rng.uniform(-3, 3, n), 1).astype(np.float32)
        reg[0] = 0.0
        audio = rng.normal(size=(n, seq, da)).astype(np.float32)
        part: dict[str, Any] = {
            "id": np.array(ids, dtype=object),
            "raw_text": np.array([f"words of {i}" for i in ids], dtype=object),
            "audio": audio,
            "vision": rng.normal(size=(n, seq, dv)).astype(np.float32),
            "text": rng.normal(size=(n, seq, dt)).astype(np.float32),
            "text_bert": rng.integers(0, 100, size=(n, 3, seq)).astype(np.float32),
            "annotations": np.array(["x"] * n, dtype=object),
            "classification_labels": np.sign(reg).astype(np.float32),
            "regression_labels": reg,
        }
        if learnable:
            part["text"] += reg[:, None, None] * direction[None, None, :]
        if lengths:
            part["audio_lengths"] = rng.integers(1, seq + 1, n).astype(np.int64)
            part["audio_lengths"][0] = seq + 7  # longer than the padded length: keep all
            part["vision_lengths"] = rng.integers(0, seq + 1, n).astype(np.int64)
        audio[0, 0, 0] = -np.inf  # always kept
        audio[-1, seq - 1, 1] = -np.inf  # may be cut off; still counted
        data[split] = part
    return data


def build_mmsa_pickle(path: Path, data: dict[str, Any] | None = None, **kwargs: Any) -> dict:
    """Write `data` (default `mmsa_data(**kwargs)`) as a protocol-4 pickle, as MMSA does."""
    data = mmsa_data(**kwargs) if data is None else data
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    return data


# --- MERTools (features/<dir>/<name>.npy + label CSVs) ----------------------------------------


@dataclass
class MertoolsLayout:
    root: Path
    labelled: dict[str, str]  # name -> expected (lower-case) label
    unlabelled: list[str]
    partial: list[str]  # features in one directory only and no label: skipped
    features: dict[str, dict[str, np.ndarray]]  # dir -> name -> array as saved
    valence: dict[str, float]  # NaN where the CSV says -10
    text: dict[str, str]
    dirs: dict[str, str] = field(
        default_factory=lambda: {"eGeMAPS_UTT": "audio", "manet_frame": "video"}
    )


def build_mertools_layout(
    root: Path,
    *,
    n_labelled: int = 20,
    n_unlabelled: int = 4,
    utt_dim: int = 6,
    frame_dim: int = 5,
    seed: int = 0,
) -> MertoolsLayout:
    """Two feature dirs (utterance [6] audio, frame [T, 5] video), labels with mixed case."""
    rng = np.random.default_rng(seed)
    labelled_names = [f"sample_{i:08d}" for i in range(n_labelled)]
    unlabelled = [f"samplenew_{i:08d}" for i in range(n_unlabelled)]
    partial = ["samplenew_partial"]
    labelled = {n: MER_CLASSES[i % len(MER_CLASSES)] for i, n in enumerate(labelled_names)}
    features: dict[str, dict[str, np.ndarray]] = {"eGeMAPS_UTT": {}, "manet_frame": {}}
    for name in labelled_names + unlabelled + partial:
        features["eGeMAPS_UTT"][name] = rng.normal(size=utt_dim).astype(np.float32)
        if name not in partial:
            t = int(rng.integers(1, 6))
            features["manet_frame"][name] = rng.normal(size=(t, frame_dim)).astype(np.float64)
    for d, arrays in features.items():
        (root / "features" / d).mkdir(parents=True, exist_ok=True)
        for name, arr in arrays.items():
            np.save(root / "features" / d / f"{name}.npy", arr)
    raw_valence = np.round(rng.uniform(-5, 5, n_labelled), 2)
    raw_valence[::4] = -10.0
    shown = [lab.capitalize() if i % 2 else lab for i, lab in enumerate(labelled.values())]
    pd.DataFrame(
        {"name": labelled_names[::-1], "discrete": shown[::-1], "valence": raw_valence[::-1]}
    ).to_csv(root / "label-disdim.csv", index=False)
    text = {n: f"文本 {n}" for n in labelled_names + unlabelled[:-1]}  # one pool sample: none
    pd.DataFrame({"name": list(text), "chinese": list(text.values())}).to_csv(
        root / "transcription-merge.csv", index=False
    )
    valence = {
        n: (np.nan if v == -10.0 else float(v))
        for n, v in zip(labelled_names, raw_valence, strict=True)
    }
    return MertoolsLayout(root, labelled, unlabelled, partial, features, valence, text)
