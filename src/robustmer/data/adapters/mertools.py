"""MER2023 / MER2024 features in the MERTools layout -> the canonical feature store.

The layout MERTools writes::

    features/<feature_dir>/<name>.npy   one file per sample: utterance [D] or frames [T, D]
    label-disdim.csv                    name, discrete[, valence] (MER2023: label-6way.csv)
    transcription-merge.csv             name, chinese (optional)

Samples in the label CSV are the labelled set; samples that have features in every selected
directory but no label are the unlabelled pool of the semi-supervised track (label "", in no
protocol role). The labelled set gets the reference protocol: 5-fold random cross-validation
(fold k: test = part k, val = part k+1, train = the rest), seeded so it is reproducible.

An official test set (option `test`: a CSV of `name[, discrete[, valence]]`, e.g. the MER2023
test1-3 labels) is kept out of the cross-validation and out of the pool: manifest `split` "test",
fold -1, no protocol role. Evaluation predicts it with the mean of the fold models' logits, then
argmax (the MERTools protocol), and scores it where the CSV gives labels.

Loading is built for ~20,000 files per directory: each directory is listed once, each file is
read once into one preallocated array (frame-level directories read the .npy headers first to
size it).

Options (all optional):
    dataset          dataset name written to the store and the manifest `source` (default mer2024)
    labels           label CSV inside `source` (default: label-disdim.csv, else label-6way.csv)
    transcripts      transcript CSV (default transcription-merge.csv when present; null: none)
    text_column      transcript column used as `text` (default chinese)
    features         {feature_dir: modality} or a list of feature dirs (modality guessed from
                     the name); default: every folder in features/, modalities guessed
    classes          class names (default the 6 MER classes)
    keep_unlabelled  keep the unlabelled pool (default true)
    test             CSV of the official test set inside `source` (default: none)
    n_folds, seed    the cross-validation (default 5 folds, seed 0)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustmer.data.store import FeatureMeta, StoreWriter
from robustmer.errors import DataError
from robustmer.io import atomic_path

CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")
LABEL_FILES = ("label-disdim.csv", "label-6way.csv")
TRANSCRIPTS = "transcription-merge.csv"
MISSING_VALENCE = -10.0
ADAPTER = "mertools"
# Name fragments -> modality, checked in this order (so `hubert` is audio before `bert` is text).
HINTS = (
    ("audio", ("egemaps", "vggish", "hubert", "wav2vec", "whisper", "wavlm", "opensmile")),
    ("video", ("manet", "clip", "videomae", "openface", "resnet", "senet", "vit", "dinov")),
    ("text", ("bert", "roberta", "baichuan", "chatglm", "text", "llama", "sentence")),
)


@dataclass
class _Plan:
    """What a conversion reads: decided once, shared by files_mertools and convert_mertools."""

    labels_csv: Path
    transcripts: Path | None
    dirs: dict[str, str]  # feature dir -> modality
    labelled: pd.DataFrame  # name, label[, valence], sorted by name
    unlabelled: list[str]
    skipped: int  # samples with features in some selected dirs only, and no label
    classes: list[str] = field(default_factory=list)
    test: pd.DataFrame | None = None  # name, label ("" when not given)[, valence]
    test_csv: Path | None = None

    def names(self) -> list[str]:
        test = [] if self.test is None else self.test["name"].tolist()
        return sorted([*self.labelled["name"].tolist(), *self.unlabelled, *test])


def modality_of(dir_name: str) -> str | None:
    """Guess a feature directory's modality from its name (None when nothing matches)."""
    low = dir_name.lower()
    for modality, hints in HINTS:
        if any(h in low for h in hints):
            return modality
    return None


def files_mertools(source: Path, options: Mapping[str, Any]) -> list[Path]:
    """The label and transcript CSVs and every .npy file the conversion reads."""
    source = Path(source)
    plan = _plan(source, options)
    files = [plan.labels_csv] + ([plan.transcripts] if plan.transcripts else [])
    files += [plan.test_csv] if plan.test_csv else []
    names = plan.names()
    for d in sorted(plan.dirs):
        files += [source / "features" / d / f"{n}.npy" for n in names]
    return files


def convert_mertools(source: Path, out_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Write the labelled set and the unlabelled pool as a canonical store with a CV table."""
    source, out_dir = Path(source), Path(out_dir)
    plan = _plan(source, options)
    dataset = str(options.get("dataset", "mer2024"))
    n_folds = int(options.get("n_folds", 5))
    seed = int(options.get("seed", 0))
    labelled = plan.labelled["name"].tolist()
    test_fold, protocol = _cv(labelled, n_folds, seed, plan.labels_csv)

    names = plan.names()
    known = plan.labelled if plan.test is None else pd.concat([plan.labelled, plan.test])
    labels = dict(zip(known["name"], known["label"], strict=True))
    official = set() if plan.test is None else set(plan.test["name"])
    manifest = pd.DataFrame(
        {
            "sample_id": names,
            "speaker": names,  # MER releases carry no speaker ids
            "label": [labels.get(n, "") for n in names],
            "text": _texts(plan, names, str(options.get("text_column", "chinese"))),
            "source": [dataset] * len(names),
            "fold": np.array([test_fold.get(n, -1) for n in names], dtype=np.int64),
            "split": [
                "test" if n in official else "train" if n in test_fold else "unlabelled"
                for n in names
            ],
        }
    )
    if "valence" in known.columns:
        valence = dict(zip(known["name"], known["valence"], strict=True))
        manifest["valence"] = np.array([valence.get(n, np.nan) for n in names], dtype=np.float64)
    unlabelled = int((manifest["label"] == "").sum())

    writer = StoreWriter(out_dir, dataset, plan.classes)
    writer.write_manifest(manifest)
    with atomic_path(out_dir / "protocol.parquet", suffix=".parquet") as tmp:
        protocol.to_parquet(tmp, index=False)
    summary: dict[str, Any] = {
        "labelled": len(labelled),
        "unlabelled": len(plan.unlabelled),
        "official_test": len(official),
        "skipped_incomplete": plan.skipped,
        "features": {},
    }
    for d, modality in sorted(plan.dirs.items()):
        folder = source / "features" / d
        values, offsets, level = load_npy_dir(folder, names)
        meta = FeatureMeta(
            modality,
            d,
            level,
            int(values.shape[1]),
            version=f"{ADAPTER}-npy",
            params={"dir": f"features/{d}"},
        )
        writer.add_feature(meta, values=values, offsets=offsets)
        summary["features"][meta.name] = {"level": level, "dim": meta.dim}
    writer.finalize(
        extra={
            "adapter": ADAPTER,
            "protocol": "fold_table",
            "n_folds": n_folds,
            "seed": seed,
            "unlabelled": unlabelled,  # pool rows and unlabelled official test rows
            "official_test": len(official),
            "skipped_incomplete": plan.skipped,
        }
    )
    summary["labels"] = plan.labelled["label"].value_counts().sort_index().to_dict()
    return summary


def load_npy_dir(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Pack `folder/<name>.npy` for `names` into (values [sum_T, D], offsets [N+1], level).

    Every .npy header is read first: the folder's layout is the majority shape (`[D]`, or
    `[T, D]` with the majority D), and every file that departs from it is named in one error, so
    one odd file sorted first cannot make the whole folder look wrong. Then each file's data is
    read once.
    """
    paths = [folder / f"{n}.npy" for n in names]
    if not paths:
        raise DataError(f"{folder}: no samples to read")
    shapes = [_npy_header(p)[0] for p in paths]
    layout = _majority_layout(shapes)
    if layout is None:
        raise DataError(
            f"{paths[0]}: shape {shapes[0]}, as most files of {folder}; expected [D] or frames "
            "[T, D]: point the adapter at a MERTools feature folder"
        )
    odd = [(p, s) for p, s in zip(paths, shapes, strict=True) if _layout(s) != layout]
    if odd:
        want = f"[{layout[1]}]" if layout[0] == 1 else f"[T, {layout[1]}]"
        listed = "; ".join(f"{p.name} {tuple(s)}" for p, s in odd[:20])
        more = f"; and {len(odd) - 20} more" if len(odd) > 20 else ""
        raise DataError(
            f"{folder}: {len(odd)} of {len(paths)} file(s) differ from the folder's shape {want} "
            f"(held by most files): {listed}{more}. Every file of a feature folder needs the "
            "same shape: extract these samples again with the same extractor"
        )
    dim = layout[1]
    if layout[0] == 1:
        values = np.empty((len(paths), dim), dtype=np.float32)
        for i, p in enumerate(paths):
            arr = _load(p)
            if arr.shape != (dim,):
                raise DataError(f"{p}: changed while it was being read; run the conversion again")
            values[i] = arr
        offsets = np.arange(len(paths) + 1, dtype=np.int64)
        level = "utterance"
    else:
        offsets = np.concatenate([[0], np.cumsum([s[0] for s in shapes])]).astype(np.int64)
        values = np.empty((int(offsets[-1]), dim), dtype=np.float32)
        for i, p in enumerate(paths):
            arr = _load(p)
            if arr.shape != (offsets[i + 1] - offsets[i], dim):
                raise DataError(f"{p}: changed while it was being read; run the conversion again")
            values[offsets[i] : offsets[i + 1]] = arr
        level = "frame"
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        k = int(np.searchsorted(offsets, row, side="right")) - 1
        raise DataError(f"{paths[k]}: NaN or infinite values; extract this sample again")
    return values, offsets, level


# --- planning -------------------------------------------------------------------------------


def _plan(source: Path, options: Mapping[str, Any]) -> _Plan:
    if not (source / "features").is_dir():
        raise DataError(
            f"{source}: no features/ folder; expected the MERTools layout "
            "features/<feature_dir>/<name>.npy with the label CSV beside features/"
        )
    classes = [str(c) for c in options.get("classes", CLASSES)]
    labels_csv = _labels_path(source, options)
    labelled = _read_labels(labels_csv, classes)
    test_csv, test = _official_test(source, options, classes, labelled)
    transcripts = _transcripts_path(source, options)
    dirs = _select_dirs(source, options)
    present = {d: _list_npy(source / "features" / d) for d in dirs}
    wanted = set(labelled["name"]) | (set() if test is None else set(test["name"]))
    for d, have in present.items():
        missing = sorted(wanted - have)
        if missing:
            raise DataError(
                f"{source / 'features' / d}: {len(missing)} labelled or official test sample(s) "
                f"have no .npy file (first: {missing[0]}.npy); extract this feature for every "
                "labelled and test sample"
            )
    everywhere = set.intersection(*present.values())
    anywhere = set.union(*present.values())
    pool = sorted(everywhere - wanted)
    skipped = len(anywhere - everywhere - wanted)
    keep = bool(options.get("keep_unlabelled", True))
    return _Plan(
        labels_csv, transcripts, dirs, labelled, pool if keep else [], skipped, classes=classes,
        test=test, test_csv=test_csv,
    )  # fmt: skip


def _official_test(
    source: Path, options: Mapping[str, Any], classes: list[str], labelled: pd.DataFrame
) -> tuple[Path | None, pd.DataFrame | None]:
    """The official test CSV (option `test`): names, and labels where it gives them."""
    if not options.get("test"):
        return None, None
    path = source / str(options["test"])
    if not path.is_file():
        raise DataError(f"{path}: test CSV named by option `test` does not exist")
    test = _read_labels(path, classes, labels_required=False)
    shared = sorted(set(test["name"]) & set(labelled["name"]))
    if shared:
        raise DataError(
            f"{path}: sample {shared[0]!r} is also in the training labels ({len(shared)} such "
            "samples); an official test sample must not be cross-validated"
        )
    return path, test


def _labels_path(source: Path, options: Mapping[str, Any]) -> Path:
    if options.get("labels"):
        path = source / str(options["labels"])
        if not path.is_file():
            raise DataError(f"{path}: label CSV named by option `labels` does not exist")
        return path
    for name in LABEL_FILES:
        if (source / name).is_file():
            return source / name
    raise DataError(
        f"{source}: no label CSV ({' or '.join(LABEL_FILES)}); put it beside features/ or name "
        "it with option `labels`"
    )


def _transcripts_path(source: Path, options: Mapping[str, Any]) -> Path | None:
    if "transcripts" in options:
        if not options["transcripts"]:
            return None
        path = source / str(options["transcripts"])
        if not path.is_file():
            raise DataError(f"{path}: transcript CSV named by option `transcripts` does not exist")
        return path
    path = source / TRANSCRIPTS
    return path if path.is_file() else None


def _read_labels(path: Path, classes: list[str], labels_required: bool = True) -> pd.DataFrame:
    """name, label (lower case; "" for an unlabelled test row)[, valence], sorted by name."""
    try:
        table = pd.read_csv(path, dtype={"name": str, "discrete": str}, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot parse this CSV ({exc})") from exc
    if not labels_required and "discrete" not in table.columns and "name" in table.columns:
        table["discrete"] = ""
    lacking = [c for c in ("name", "discrete") if c not in table.columns]
    if lacking:
        raise DataError(f"{path}: lacks column(s) {lacking}; expected name, discrete[, valence]")
    out = pd.DataFrame({"name": table["name"].str.strip()})
    out["label"] = table["discrete"].str.strip().str.lower()
    for row, (name, lab) in enumerate(zip(out["name"], out["label"], strict=True)):
        if not name:
            raise DataError(f"{path}: row {row + 2} has an empty name")
        if lab == "" and not labels_required:
            continue
        if lab not in classes:
            raise DataError(
                f"{path}: row {row + 2} ({name}) has label {lab!r}, not one of {classes}; fix "
                "the row or set option `classes`"
            )
    dup = out["name"][out["name"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: sample {dup.iloc[0]!r} is listed twice; keep one row per sample")
    if "valence" in table.columns:
        valence = pd.to_numeric(table["valence"].replace("", np.nan), errors="coerce")
        out["valence"] = valence.astype(np.float64).where(valence != MISSING_VALENCE, np.nan)
    return out.sort_values("name", kind="stable").reset_index(drop=True)


def _select_dirs(source: Path, options: Mapping[str, Any]) -> dict[str, str]:
    given = options.get("features")
    if given is None:
        root = source / "features"
        given = {p.name: None for p in sorted(root.iterdir()) if p.is_dir()}
    elif not isinstance(given, Mapping):
        given = {str(d): None for d in given}
    if not given:
        raise DataError(f"{source / 'features'}: no feature folders")
    out = {}
    for d, modality in given.items():
        if not (source / "features" / str(d)).is_dir():
            raise DataError(f"{source / 'features' / str(d)}: feature folder does not exist")
        modality = modality or modality_of(str(d))
        if modality not in ("audio", "video", "text"):
            raise DataError(
                f"features/{d}: cannot tell its modality from the name; set option "
                f"`features: {{{d}: audio|video|text}}`"
            )
        out[str(d)] = str(modality)
    return out


def _list_npy(folder: Path) -> set[str]:
    with os.scandir(folder) as entries:
        return {e.name[:-4] for e in entries if e.name.endswith(".npy")}


def _texts(plan: _Plan, names: list[str], column: str) -> list[str]:
    if plan.transcripts is None:
        return [""] * len(names)
    table = pd.read_csv(plan.transcripts, dtype=str, keep_default_na=False)
    if "name" not in table.columns or column not in table.columns:
        raise DataError(
            f"{plan.transcripts}: needs columns name and {column} (option `text_column`)"
        )
    text = dict(zip(table["name"].str.strip(), table[column], strict=True))
    return [text.get(n, "") for n in names]


def _cv(
    labelled: list[str], n_folds: int, seed: int, where: Path
) -> tuple[dict[str, int], pd.DataFrame]:
    """The seeded K-fold split: test = part k, val = part (k+1) % K, train = the rest."""
    if n_folds < 3 or len(labelled) < n_folds:
        raise DataError(
            f"{where}: {len(labelled)} labelled samples cannot make {n_folds} folds with "
            "separate validation and test parts (need n_folds >= 3 and a sample per part)"
        )
    perm = np.random.default_rng(seed).permutation(len(labelled))
    parts = np.array_split(perm, n_folds)
    test_fold = {labelled[i]: k for k, part in enumerate(parts) for i in part}
    rows = []
    for k in range(n_folds):
        role = np.full(len(labelled), "train", dtype=object)
        role[parts[(k + 1) % n_folds]] = "val"
        role[parts[k]] = "test"
        rows.append(pd.DataFrame({"sample_id": labelled, "fold": k, "role": role}))
    protocol = pd.concat(rows, ignore_index=True)
    protocol["fold"] = protocol["fold"].astype(np.int64)
    protocol["role"] = protocol["role"].astype(str)
    return test_fold, protocol


# --- .npy ---------------------------------------------------------------------------------------


def _layout(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(rank, feature dim) of a `[D]` or `[T, D]` array; None for any other rank."""
    return (len(shape), int(shape[-1])) if len(shape) in (1, 2) else None


def _majority_layout(shapes: list[tuple[int, ...]]) -> tuple[int, int] | None:
    """The (rank, dim) most files of a folder have (ties: the first file's); None if most
    files are neither `[D]` nor `[T, D]`."""
    counts = Counter(_layout(s) for s in shapes)
    return max(counts, key=lambda k: counts[k])


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header alone (no data read)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                arr = np.load(path, mmap_mode="r")
                shape, dtype = arr.shape, arr.dtype
                del arr
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing; extract this feature for this sample") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc}); extract it again") from exc
    if dtype.kind not in "fiu":
        raise DataError(f"{path}: holds {dtype} values, expected numbers")
    return tuple(int(s) for s in shape), dtype


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing; extract this feature for this sample") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{path}: not a readable numeric .npy file ({exc}); it is truncated or holds "
            "objects: extract it again"
        ) from exc
