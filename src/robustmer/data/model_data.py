"""From the feature store to tensors: labels, speaker-independent folds, normalisation, batches.

Everything that decides which rows a model learns from lives here, so training and evaluation
cannot disagree about folds or preprocessing: both call `load_model_data` and `data_folds`,
and the normaliser fitted on a fold's training rows travels inside that fold's checkpoint.
A method's recipe reads its rows from the `FoldSplit` (train, val, test, and the unlabelled
pool rows it may learn from without labels).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence

from robustmer import MODALITIES
from robustmer.config import ModelSpec
from robustmer.data.protocol import PROTOCOL_FILE, ROLES, SPLITS, WITHHELD_COLUMN, read_roles
from robustmer.data.store import FeatureStore
from robustmer.errors import DataError
from robustmer.seeding import rng

NORM_EPS = 1e-6
OFFICIAL_TEST = "test"  # manifest `split` of an official test set outside the CV
REGRESSION_COLUMN = "regression"
VALENCE_COLUMN = "valence"  # MER2023: the second label (task classification_valence)


@dataclass
class ModalityInput:
    """One modality's feature for all N utterances, in manifest order.

    Utterance level: `values` is `[N, D]` and `offsets` is None. Frame level (only for models
    that read sequences): `values` is `[sum_T, D]` and utterance i is
    `values[offsets[i]:offsets[i+1]]`. A modality that lists several features holds their
    utterance vectors side by side (`parts`: each store name and its dim, in listed order).
    """

    feature: str
    level: str
    values: np.ndarray
    offsets: np.ndarray | None = None
    parts: tuple[tuple[str, int], ...] = ()

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def names(self) -> tuple[str, ...]:
        """The store names this input was read from."""
        return tuple(name for name, _ in self.parts) or (self.feature,)

    @property
    def part_dims(self) -> tuple[int, ...]:
        return tuple(dim for _, dim in self.parts) or (self.dim,)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The feature rows (frames for sequences) that belong to these utterances."""
        if self.offsets is None:
            return self.values[indices]
        parts = [self.values[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        return np.concatenate(parts) if parts else self.values[:0]


@dataclass
class ModelData:
    """What one model reads from the store: its inputs, the labels and the protocol columns.

    `labels` says which rows are labelled (and their class) for every task, so folds and the
    unlabelled pool are the same for all; a regression model also has `targets`, the float
    value it learns and is scored on (NaN on unlabelled rows); a `classification_valence` model
    has `valence` beside its class (NaN where unknown: never trained on or scored).
    """

    inputs: dict[str, ModalityInput]
    labels: np.ndarray  # class index per row; -1 for unlabelled rows (a semi-supervised pool)
    manifest: pd.DataFrame  # sample_id, speaker, and fold (int) and/or split where the store has
    classes: list[str]
    roles: pd.DataFrame | None = None  # protocol.parquet: sample_id, fold, role (explicit folds)
    targets: np.ndarray | None = None  # float64 per row for regression models, else None
    # The true class of pool rows whose label a corpus withheld on purpose (the built-in
    # corpus's `withheld_label`), -1 elsewhere; None when the store has none. Only for scoring
    # pseudo-labels: no recipe may train on it.
    withheld: np.ndarray | None = None
    valence: np.ndarray | None = None  # float64 per row for classification_valence, else None

    @property
    def task(self) -> str:
        if self.targets is not None:
            return "regression"
        return "classification" if self.valence is None else "classification_valence"

    @property
    def input_dims(self) -> dict[str, int]:
        return {m: x.dim for m, x in self.inputs.items()}

    @property
    def levels(self) -> dict[str, str]:
        return {m: x.level for m, x in self.inputs.items()}

    @property
    def modalities(self) -> list[str]:
        """The modalities this model reads, in the canonical MODALITIES order."""
        return [m for m in MODALITIES if m in self.inputs]

    @property
    def part_dims(self) -> dict[str, tuple[int, ...]]:
        """Per modality, the dim of each listed feature (one entry unless several are listed)."""
        return {m: x.part_dims for m, x in self.inputs.items()}

    @property
    def feature_names(self) -> list[str]:
        return sorted(name for x in self.inputs.values() for name in x.names)

    def __len__(self) -> int:
        return len(self.labels)


def unavailable(store: FeatureStore, spec: ModelSpec) -> str | None:
    """Why `spec` cannot run on this dataset at all (a modality it fuses has no feature in the
    store: video models on EmoDB), or None. The stages skip such a model with this one line; a
    feature name missing for a modality the store does have stays an error (a typo to fix)."""
    have = store.modalities()
    absent = [m for m in MODALITIES if m in spec.features and m not in have]
    if not absent:
        return None
    held = ", ".join(have) or "nothing"
    needs = ", ".join(name for m in absent for name in spec.store_names(m))
    return (
        f"dataset {store.dataset} has no {' or '.join(absent)} features (its store holds "
        f"{held}); model {spec.name} needs {needs}"
    )


def load_model_data(store: FeatureStore, spec: ModelSpec, frame_inputs: bool) -> ModelData:
    """Load the features `spec` names; frame features stay sequences only if `frame_inputs`."""
    manifest = store.manifest
    for column in ("sample_id", "speaker", "label"):
        if column not in manifest.columns:
            raise DataError(f"{store.root}/manifest.parquet: no `{column}` column")
    roles = read_roles(store.root)
    if roles is None and "fold" not in manifest.columns and "split" not in manifest.columns:
        raise DataError(
            f"{store.root}/manifest.parquet: no `fold` or `split` column and no {PROTOCOL_FILE}; "
            "the dataset adapter must give the protocol (re-run `robustmer acquire` and "
            "`robustmer extract`)"
        )
    labels = encode_labels(
        manifest, store.classes, source=f"{store.root}/manifest.parquet",
        allow_unlabelled=bool(store.info.get("unlabelled")),
    )  # fmt: skip
    have = set(store.feature_names())
    lacking = [n for m in spec.features for n in spec.store_names(m) if n not in have]
    if lacking:
        raise DataError(
            f"{store.root}: model {spec.name!r} reads {', '.join(lacking)}, which the store lacks "
            f"(it holds {', '.join(sorted(have))}); fix models.{spec.name}.features in params.yaml "
            "or add the extractor under `extract.<modality>` and re-run `robustmer extract`"
        )
    inputs: dict[str, ModalityInput] = {}
    for modality in spec.features:
        names = spec.store_names(modality)
        if len(names) > 1:
            parts = [ModalityInput(n, "utterance", store.utterance_matrix(n)) for n in names]
            for part in parts:
                _check_finite(part, manifest, store.root)
            inputs[modality] = side_by_side(parts)
            continue
        if store.meta(names[0]).level == "frame" and frame_inputs:
            values = np.asarray(store.values(names[0]), dtype=np.float32)
            inputs[modality] = ModalityInput(names[0], "frame", values, store.offsets(names[0]))
        else:
            inputs[modality] = ModalityInput(names[0], "utterance",
                                             store.utterance_matrix(names[0]))  # fmt: skip
        _check_finite(inputs[modality], manifest, store.root)
    protocol = manifest[["sample_id", "speaker"]].astype(str).copy()
    if "fold" in manifest.columns:
        protocol["fold"] = _fold_column(manifest, store.root, labelled=labels >= 0)
    if "split" in manifest.columns:
        protocol["split"] = manifest["split"].astype(str).to_numpy()
    targets = None
    if spec.task == "regression":
        targets = regression_targets(manifest, labels >= 0, f"{store.root}/manifest.parquet")
    valence = None
    if spec.task == "classification_valence":
        valence = valence_targets(manifest, labels >= 0, f"{store.root}/manifest.parquet")
    withheld = None
    if WITHHELD_COLUMN in manifest.columns:
        index = {c: i for i, c in enumerate(store.classes)}
        withheld = manifest[WITHHELD_COLUMN].astype(str).map(index).fillna(-1)
        withheld = withheld.to_numpy(dtype=np.int64)
    return ModelData(inputs, labels, protocol, store.classes, roles, targets, withheld, valence)


def valence_targets(manifest: pd.DataFrame, labelled: np.ndarray, source: str) -> np.ndarray:
    """The manifest's `valence` on labelled rows (NaN where unknown, and on unlabelled rows).

    A row without a valence is trained and scored on its class only; a store with no valence
    on any labelled row cannot train the valence head, which is an error naming the fix.
    """
    if VALENCE_COLUMN not in manifest.columns:
        raise DataError(
            f"{source}: no `{VALENCE_COLUMN}` column, so a model with `task: "
            "classification_valence` has no valence to learn; use a store whose adapter writes "
            "one (mer2023, builtin) or set the model's `task: classification`"
        )
    values = pd.to_numeric(manifest[VALENCE_COLUMN], errors="coerce").to_numpy(np.float64)
    values = np.where(labelled, values, np.nan)
    if not np.isfinite(values).any():
        raise DataError(
            f"{source}: no labelled sample has a valence; set the model's `task: classification` "
            "or give the dataset's valence labels and re-run `robustmer acquire` and extract"
        )
    return values


def side_by_side(parts: list[ModalityInput]) -> ModalityInput:
    """Several utterance-level features of one modality as one input, in the given order.

    Frame sequences of different extractors have different rates, so a modality that lists
    several features is read at utterance level (frame features as their mean).
    """
    frames = [x.feature for x in parts if x.offsets is not None]
    if frames:
        raise ValueError(f"side_by_side takes utterance-level inputs; {frames} are frames")
    values = np.concatenate([x.values for x in parts], axis=1).astype(np.float32, copy=False)
    return ModalityInput(
        " + ".join(x.feature for x in parts), "utterance", values,
        parts=tuple((x.feature, x.dim) for x in parts),
    )  # fmt: skip


def regression_targets(manifest: pd.DataFrame, labelled: np.ndarray, source: str) -> np.ndarray:
    """The manifest's float `regression` column; every labelled row must have a finite value.

    Unlabelled rows get NaN (they are never trained or tested), whatever the column holds.
    """
    if REGRESSION_COLUMN not in manifest.columns:
        raise DataError(
            f"{source}: no `{REGRESSION_COLUMN}` column, so a model with `task: regression` has "
            "no targets; use a store whose adapter writes one (mosi, mosei) or set the model's "
            "`task: classification` in params.yaml"
        )
    try:
        values = manifest[REGRESSION_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{source}: `{REGRESSION_COLUMN}` must hold numbers ({exc}); rebuild the store"
        ) from exc
    bad = labelled & ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: labelled sample {manifest['sample_id'].iloc[first]!r} has "
            f"{REGRESSION_COLUMN} {values[first]} ({int(bad.sum())} such samples); fix the "
            "source's regression labels and re-run `robustmer acquire` and `robustmer extract`"
        )
    return np.where(labelled, values, np.nan)


def encode_labels(
    manifest: pd.DataFrame, classes: list[str], source: str, allow_unlabelled: bool = False
) -> np.ndarray:
    """Manifest `label` names -> class indices in `classes` order; unknown names are an error.

    An empty label marks an unlabelled sample (index -1), allowed only in stores that declare
    an unlabelled pool, so a forgotten label elsewhere is still caught.
    """
    index = {c: i for i, c in enumerate(classes)}
    labels = manifest["label"].map(index)
    if allow_unlabelled:
        labels = labels.where(manifest["label"].astype(str) != "", -1)
    bad = labels.isna()
    if bad.any():
        row = manifest[bad].iloc[0]
        raise DataError(
            f"{source}: sample {row['sample_id']!r} has label {row['label']!r}, which is not one "
            f"of the store's classes {classes} ({int(bad.sum())} such samples); fix the labels "
            "or the class list and rebuild the store"
        )
    return labels.to_numpy(dtype=np.int64, copy=True)


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one cross-validation fold; train, val and test share no speaker.

    `unlabelled` holds the rows of the dataset's unlabelled pool that this fold may learn from
    without labels (semi-supervised and self-supervised recipes): every pool row except those
    of the fold's validation and test speakers. Pool rows are never scored.
    """

    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_speakers: list[str]
    test_speakers: list[str]
    unlabelled: np.ndarray = field(default_factory=_no_rows)


def data_folds(data: ModelData, val_speakers: int, seed: int) -> list[FoldSplit]:
    """The dataset's evaluation protocol as fold splits over labelled rows.

    In order of precedence: explicit per-fold roles (`protocol.parquet`, e.g. the MMIN target
    files or MERTools CV), speaker-independent CV over the manifest `fold` column, or the
    official train/valid/test `split` as one fold (fold 0). Unlabelled rows are never scored,
    nor are the rows of an official test set outside the CV (`official_test`).
    """
    official = np.zeros(len(data), dtype=bool)
    official[official_test(data)] = True
    labelled = (data.labels >= 0) & ~official
    if data.roles is not None:
        splits = role_folds(data.manifest, data.roles, labelled)
    elif "fold" in data.manifest.columns:
        rows = np.flatnonzero(labelled)
        splits = speaker_folds(data.manifest.iloc[rows].reset_index(drop=True), val_speakers, seed)
        splits = [
            FoldSplit(
                s.fold, rows[s.train], rows[s.val], rows[s.test], s.val_speakers, s.test_speakers
            )
            for s in splits
        ]
    else:
        splits = [split_fold(data.manifest, labelled)]
    return [_with_pool(s, data.manifest, (data.labels < 0) & ~official) for s in splits]


def official_test(data: ModelData) -> np.ndarray:
    """Rows of an official test set kept out of the cross-validation (manifest `split` "test"
    beside explicit roles or a `fold` column, e.g. the MER test sets), labelled or not.

    No fold trains, validates or tests on them and they are not in the pool; evaluation predicts
    them with the mean of the fold models' outputs. Empty where the official splits are the
    protocol themselves (fold 0 then tests the `test` split).
    """
    if "split" not in data.manifest.columns:
        return _no_rows()
    if data.roles is None and "fold" not in data.manifest.columns:
        return _no_rows()
    return np.flatnonzero(data.manifest["split"].to_numpy() == OFFICIAL_TEST)


def _with_pool(split: FoldSplit, manifest: pd.DataFrame, pool: np.ndarray) -> FoldSplit:
    """The fold with its usable pool rows: none of its validation or test speakers."""
    held_out = set(split.val_speakers) | set(split.test_speakers)
    speakers = manifest["speaker"].astype(str).to_numpy()
    usable = pool & ~np.isin(speakers, sorted(held_out))
    return replace(split, unlabelled=np.flatnonzero(usable))


def split_fold(manifest: pd.DataFrame, labelled: np.ndarray) -> FoldSplit:
    """Official train/valid/test splits as fold 0 (speakers may recur across splits)."""
    split = manifest["split"].astype(str).to_numpy()
    unknown = sorted(set(split[labelled]) - set(SPLITS))
    if unknown:
        raise DataError(
            f"manifest `split` has values {unknown}; expected {list(SPLITS)} (or "
            "`unlabelled` for the semi-supervised pool)"
        )
    parts = {name: np.flatnonzero((split == name) & labelled) for name in SPLITS}
    for name, rows in parts.items():
        if name != "valid" and len(rows) == 0:
            raise DataError(f"manifest `split` has no {name!r} rows; the protocol needs them")
    speakers = manifest["speaker"].astype(str).to_numpy()
    return FoldSplit(
        fold=0,
        train=parts["train"],
        val=parts["valid"],
        test=parts["test"],
        val_speakers=sorted(set(speakers[parts["valid"]].tolist())),
        test_speakers=sorted(set(speakers[parts["test"]].tolist())),
    )


def role_folds(
    manifest: pd.DataFrame, roles: pd.DataFrame, labelled: np.ndarray
) -> list[FoldSplit]:
    """Per-fold train/val/test rows from an explicit roles table."""
    index = pd.Series(np.arange(len(manifest)), index=manifest["sample_id"].astype(str))
    if not index.index.is_unique:
        raise DataError("manifest sample ids are not unique; rebuild the store")
    ids = roles["sample_id"].astype(str)
    unknown = ~ids.isin(index.index)
    if unknown.any():
        raise DataError(
            f"{PROTOCOL_FILE} names sample {ids[unknown].iloc[0]!r}, which is not in the "
            f"manifest ({int(unknown.sum())} such rows); rebuild the store"
        )
    rows = index[ids].to_numpy()
    if not labelled[rows].all():
        raise DataError(
            f"{PROTOCOL_FILE} gives a role to an unlabelled or official test sample; rebuild "
            "the store"
        )
    speakers = manifest["speaker"].astype(str).to_numpy()
    splits = []
    for fold in sorted(roles["fold"].unique().tolist()):
        in_fold = (roles["fold"] == fold).to_numpy()
        part = {r: np.sort(rows[in_fold & (roles["role"] == r).to_numpy()]) for r in ROLES}
        if len(part["train"]) == 0 or len(part["test"]) == 0:
            raise DataError(f"{PROTOCOL_FILE}: fold {fold} has no train or no test rows")
        splits.append(
            FoldSplit(
                fold=int(fold),
                train=part["train"],
                val=part["val"],
                test=part["test"],
                val_speakers=sorted(set(speakers[part["val"]].tolist())),
                test_speakers=sorted(set(speakers[part["test"]].tolist())),
            )
        )
    return splits


def speaker_folds(manifest: pd.DataFrame, val_speakers: int, seed: int) -> list[FoldSplit]:
    """Speaker-independent CV over the manifest `fold` column.

    For fold k the test set is every row with fold == k. From the remaining speakers,
    `val_speakers` whole speakers are drawn (seeded per fold, the same for every model so models
    are compared on identical splits) as the validation set that picks the best epoch; the rest
    is the training set.
    """
    folds = manifest["fold"].to_numpy()
    speakers = manifest["speaker"].astype(str).to_numpy()
    _check_speaker_independent(speakers, folds)
    splits = []
    for fold in sorted(set(folds.tolist())):
        test_mask = folds == fold
        others = np.array(sorted(set(speakers[~test_mask].tolist())))
        if len(others) <= val_speakers:
            raise DataError(
                f"fold {fold}: only {len(others)} speakers outside the test fold, so "
                f"cv.val_speakers = {val_speakers} leaves none to train on; lower cv.val_speakers"
            )
        chosen = rng(seed, "cv", "val_speakers", int(fold)).choice(
            others, size=val_speakers, replace=False
        )
        val_mask = ~test_mask & np.isin(speakers, chosen)
        train_mask = ~test_mask & ~val_mask
        splits.append(
            FoldSplit(
                fold=int(fold),
                train=np.flatnonzero(train_mask),
                val=np.flatnonzero(val_mask),
                test=np.flatnonzero(test_mask),
                val_speakers=sorted(chosen.tolist()),
                test_speakers=sorted(set(speakers[test_mask].tolist())),
            )
        )
    return splits


class Normaliser:
    """Per-modality z-score with statistics from training rows only.

    x' = (x - mean) / std, with std replaced by 1 where it is below `eps` (constant features
    map to 0 instead of blowing up). Frame features use the statistics of all training frames.
    """

    def __init__(self, mean: dict[str, np.ndarray], std: dict[str, np.ndarray]):
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, data: ModelData, rows: np.ndarray, eps: float = NORM_EPS) -> Normaliser:
        mean, std = {}, {}
        for m, x in data.inputs.items():
            train = x.rows(rows).astype(np.float64)
            if len(train) == 0:
                raise DataError(f"{x.feature}: no training frames to fit the normaliser on")
            mu, sd = train.mean(axis=0), train.std(axis=0)
            mean[m] = mu.astype(np.float32)
            std[m] = np.where(sd < eps, 1.0, sd).astype(np.float32)
        return cls(mean, std)

    def apply(self, modality: str, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean[modality]) / self.std[modality]).astype(np.float32)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Plain tensors for the checkpoint (loadable with `torch.load(weights_only=True)`)."""
        return {
            m: {"mean": torch.from_numpy(self.mean[m]), "std": torch.from_numpy(self.std[m])}
            for m in self.mean
        }

    @classmethod
    def from_state(cls, state: dict[str, dict[str, torch.Tensor]]) -> Normaliser:
        return cls(
            {m: s["mean"].numpy() for m, s in state.items()},
            {m: s["std"].numpy() for m, s in state.items()},
        )


Batch = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, torch.Tensor]


class FoldTensors:
    """All utterances normalised with one fold's statistics, on the device, ready to batch.

    `y` is what a batch returns as its target: class indices (`labels`) for classification,
    float32 `targets` for regression, and for classification_valence float32 `[N, 2]` rows of
    (class index, valence), the valence NaN where unknown.
    """

    def __init__(self, data: ModelData, normaliser: Normaliser, device: torch.device):
        self.device = device
        self.task = data.task
        self.labels = torch.tensor(data.labels, dtype=torch.long, device=device)
        self.y = self.labels
        if data.targets is not None:
            self.y = torch.tensor(data.targets, dtype=torch.float32, device=device)
        if data.valence is not None:
            pairs = np.stack([data.labels.astype(np.float64), data.valence], axis=1)
            self.y = torch.tensor(pairs, dtype=torch.float32, device=device)
        self.values: dict[str, torch.Tensor] = {}
        self.offsets: dict[str, np.ndarray] = {}
        for m, x in data.inputs.items():
            self.values[m] = torch.from_numpy(normaliser.apply(m, x.values)).to(device)
            if x.offsets is not None:
                self.offsets[m] = np.asarray(x.offsets)

    def with_labels(self, rows: np.ndarray, labels: np.ndarray) -> FoldTensors:
        """A copy whose class targets of `rows` are `labels` (pseudo-labels of pool rows).

        Features are shared with this object, not copied; only the label tensor is new.
        """
        if self.task != "classification":
            raise ValueError("pseudo-labels are class labels; this data is a regression task")
        out = copy.copy(self)
        out.labels = self.labels.clone()
        index = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.device)
        out.labels[index] = torch.as_tensor(np.asarray(labels), dtype=torch.long,
                                            device=self.device)  # fmt: skip
        out.y = out.labels
        return out

    def batch(self, indices: np.ndarray) -> Batch:
        """Inputs (sequences zero-padded at the end), lengths (None if no sequences), `y`."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        inputs: dict[str, torch.Tensor] = {}
        lengths: dict[str, torch.Tensor] = {}
        for m, values in self.values.items():
            if m not in self.offsets:
                inputs[m] = values.index_select(0, idx)
                continue
            off = self.offsets[m]
            seqs = [values[off[i] : off[i + 1]] for i in indices]
            lengths[m] = torch.tensor([len(s) for s in seqs], dtype=torch.long)
            if max((len(s) for s in seqs), default=0) == 0:
                inputs[m] = values.new_zeros(len(seqs), 1, values.shape[1])
            else:
                inputs[m] = pad_sequence(seqs, batch_first=True)
        return inputs, (lengths or None), self.y.index_select(0, idx)


def iterate_batches(
    indices: np.ndarray, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[np.ndarray]:
    """Consecutive batches of `indices`, shuffled with `generator` when one is given."""
    order = np.asarray(indices)
    if generator is not None:
        order = order[torch.randperm(len(order), generator=generator).numpy()]
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _fold_column(manifest: pd.DataFrame, root: object, labelled: np.ndarray) -> np.ndarray:
    """The `fold` column as int64 (-1 for unlabelled rows, which belong to no fold)."""
    folds = manifest["fold"].where(labelled, -1)
    if folds.isna().any():
        sample = manifest.loc[folds.isna(), "sample_id"].iloc[0]
        raise DataError(f"{root}/manifest.parquet: sample {sample!r} has no fold")
    try:
        return folds.to_numpy().astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{root}/manifest.parquet: `fold` must hold integers ({exc})") from exc


def _check_speaker_independent(speakers: np.ndarray, folds: np.ndarray) -> None:
    frame = pd.DataFrame({"speaker": speakers, "fold": folds})
    per_speaker = frame.groupby("speaker")["fold"].nunique()
    split = per_speaker[per_speaker > 1]
    if len(split):
        speaker = split.index[0]
        where = sorted(frame.loc[frame["speaker"] == speaker, "fold"].unique().tolist())
        raise DataError(
            f"speaker {speaker!r} appears in folds {where}; folds must be speaker-independent "
            "(assign each speaker to exactly one fold in the manifest)"
        )


def _check_finite(x: ModalityInput, manifest: pd.DataFrame, root: object) -> None:
    bad_rows = ~np.isfinite(x.values).all(axis=1)
    if not bad_rows.any():
        return
    first = int(np.flatnonzero(bad_rows)[0])
    sample = first if x.offsets is None else int(np.searchsorted(x.offsets, first, "right") - 1)
    raise DataError(
        f"{root}: feature {x.feature} holds NaN/inf values (first in sample "
        f"{manifest['sample_id'].iloc[sample]!r}); run `robustmer validate` and re-extract"
    )
