"""The raw corpus layout every raw-corpus adapter writes, and the helpers they share.

An adapter reads a user's copy of a corpus in place and writes only `out_dir/metadata.csv` (one
row per utterance, absolute media paths plus their sha256, so a changed copy changes the DVC hash)
and `out_dir/corpus.json` (classes, protocol, provenance). Media are never copied: the licences of
most corpora forbid redistribution, and the `extract` stage reads them where they are.

Adapters read and check everything before writing, so a `DataError` (which names the file and the
fix) leaves `out_dir` as it was.
"""

from __future__ import annotations

import difflib
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.errors import ConfigError, DataError
from robustmer.io import atomic_path, sha256_file, write_json

SPLITS = ("train", "valid", "test")
MAX_LISTED = 20  # skipped files / problems listed by name; the rest are counted
# Undeclared class lists: how a mistyped label is told from a genuine class (check_labels).
TYPO_SIMILARITY = 0.8  # difflib ratio of two case-folded labels at or above which they look alike
TYPO_MIN_RATIO = 3  # ...and the likely intended label is at least this many times as frequent
SINGLETON_MIN_TYPICAL = 3  # a one-row label is suspect when the others' median count is >= this


class SkipLog:
    """Files an adapter left out, with the reason; corpus.json lists the first few by name."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def add(self, path: Path | str, reason: str) -> None:
        self.entries.append((Path(path).as_posix(), reason))

    def __len__(self) -> int:
        return len(self.entries)

    def report(self) -> dict[str, Any]:
        shown = [{"path": p, "reason": r} for p, r in self.entries[:MAX_LISTED]]
        return {"count": len(self.entries), "files": shown}


def resolve_options(
    adapter: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Defaults overlaid with the user's options; an unknown key (a typo) is a ConfigError."""
    given = dict(options or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{adapter}: unknown option(s) {unknown}; known options: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **given}


def option_int(adapter: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{adapter}: option {name} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def option_bool(adapter: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{adapter}: option {name} must be true or false, got {value!r}")
    return value


def round_robin_folds(
    speakers: Iterable[str],
    n_folds: int,
    *,
    strata: Mapping[str, str] | None = None,
    where: str = "",
) -> dict[str, int]:
    """Speaker -> fold: speakers sorted (stratum by stratum when given) and dealt in turn.

    Dealing one stratum after the other with one running counter keeps every fold's size and
    its count per stratum (e.g. gender) within one of the others, whatever the speaker numbers.
    """
    unique = sorted(set(speakers))
    if len(unique) < n_folds:
        raise DataError(
            f"{where}: {len(unique)} speaker(s) but n_folds={n_folds}; speaker-independent folds "
            "need at least one speaker per fold: lower the n_folds option, or give a speaker "
            "column (or fold/split column) that matches the recordings"
        )
    order = unique
    if strata:  # strata in the order of their first speaker, so speaker 1 still opens fold 0
        first: dict[str, str] = {}
        for speaker in unique:
            first.setdefault(strata[speaker], speaker)
        order = sorted(unique, key=lambda s: (first[strata[s]], s))
    return {speaker: i % n_folds for i, speaker in enumerate(order)}


def check_speaker_folds(frame: pd.DataFrame, where: str) -> None:
    """No speaker may appear in two folds: otherwise test speakers leak into training."""
    per_speaker = frame.groupby("speaker")["fold"].nunique()
    leaking = sorted(per_speaker[per_speaker > 1].index)
    if leaking:
        shown = ", ".join(map(str, leaking[:MAX_LISTED]))
        raise DataError(
            f"{where}: speaker(s) {shown} appear in more than one fold; folds must be "
            "speaker-independent: give each speaker a single fold"
        )


def hash_files(paths: Sequence[Path]) -> list[str]:
    """sha256 of each file, in order; threads overlap the disk reads of large corpora."""
    if not paths:
        return []
    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(sha256_file, paths))


def add_media_columns(frame: pd.DataFrame, media: Mapping[str, Sequence[Path]]) -> None:
    """`<modality>_path` (absolute posix) and `<modality>_sha256` for each modality given."""
    for modality, paths in media.items():
        frame[f"{modality}_path"] = [Path(p).absolute().as_posix() for p in paths]
        frame[f"{modality}_sha256"] = hash_files(list(paths))


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Core columns first in a fixed order, the adapter's extra columns after them."""
    core = [
        "sample_id",
        "speaker",
        "label",
        "fold",
        "split",
        "text",
        "audio_path",
        "audio_sha256",
        "video_path",
        "video_sha256",
    ]
    first = [c for c in core if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def corpus_info(
    dataset: str,
    adapter: str,
    classes: Sequence[str],
    source: Path,
    frame: pd.DataFrame,
    **facts: Any,
) -> dict[str, Any]:
    """corpus.json: the contract's keys plus counts that make a wrong copy easy to spot."""
    protocol = "speaker_folds" if "fold" in frame.columns else "splits"
    group = "fold" if protocol == "speaker_folds" else "split"
    counts = frame[group].value_counts()
    keys = sorted(counts.index) if group == "fold" else [s for s in SPLITS if s in counts.index]
    info = {
        "dataset": dataset,
        "kind": "raw",
        "adapter": adapter,
        "classes": list(classes),
        "source": source.as_posix(),
        "n_samples": len(frame),
        "n_speakers": int(frame["speaker"].nunique()),
        "protocol": protocol,
        "label_counts": {c: int((frame["label"] == c).sum()) for c in classes},
        f"{group}_counts": {str(k): int(counts[k]) for k in keys},
        "modalities": [m for m in ("audio", "video") if f"{m}_path" in frame.columns]
        + (["text"] if "text" in frame.columns else []),
    }
    if protocol == "speaker_folds":
        info["n_folds"] = int(frame["fold"].max()) + 1
    info.update(facts)
    return info


def write_raw_corpus(out_dir: Path, frame: pd.DataFrame, info: Mapping[str, Any]) -> None:
    """metadata.csv, then corpus.json (the extract stage needs both), each written atomically."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "metadata.csv", suffix=".csv") as tmp:
        order_columns(frame).to_csv(tmp, index=False)
    write_json(out_dir / "corpus.json", dict(info))


def summary(info: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "n_samples", "n_speakers", "label_counts", "fold_counts", "split_counts")
    out = {k: info[k] for k in keys if k in info}
    out["skipped"] = int(info.get("skipped", {}).get("count", 0))
    return out


def source_dir(adapter: str, source: Path) -> Path:
    """The source folder as an absolute path; a missing one is a DataError naming it."""
    source = Path(source).absolute()
    if not source.is_dir():
        raise DataError(f"{adapter}: source folder {source} does not exist or is not a folder")
    return source


@dataclass(frozen=True)
class LabelRow:
    """Where one label was read: for messages that name the file, the line and the sample."""

    label: str
    file: Path
    line: int
    sample_id: str


def check_labels(
    adapter: str,
    rows: Sequence[LabelRow],
    classes: Sequence[str] | None,
    classes_key: str,
) -> None:
    """Refuse a label that would silently become a class of its own; nothing is written yet.

    With a declared class list (`classes`), every label must be in it. Without one, the labels
    are checked against each other. A label is refused when it looks like a typo of another:
    the same name in another case (`Happy` beside `happy`), or a difflib ratio >=
    TYPO_SIMILARITY of the case-folded names (`hapy` / `happy`) with the other at least
    TYPO_MIN_RATIO times as frequent. It is also refused when it occurs once while the median
    count of the other labels is at least SINGLETON_MIN_TYPICAL: a class with one sample cannot
    be in both a training and a test fold, so it is an error even when real. Small corpora where
    every class is rare, and similar names with similar counts (`happy` / `unhappy`), pass.
    `classes_key` is the params.yaml key that declares the class list (and so accepts such a
    label as a class).
    """
    if not rows:
        return
    if classes is not None:
        allowed = set(classes)
        for row in rows:
            if row.label not in allowed:
                raise DataError(
                    f"{adapter}: {row.file} line {row.line}: label {row.label!r} of "
                    f"{row.sample_id} is not one of the declared classes {list(classes)}"
                    f"{_did_you_mean(row.label, classes)}; fix the row, or add the class to "
                    f"`{classes_key}` in params.yaml"
                )
        return
    counts = Counter(row.label for row in rows)
    first = {}
    for row in rows:
        first.setdefault(row.label, row)
    suspects = []
    for label in sorted(counts, key=lambda lab: (counts[lab], first[lab].line)):
        why, intended = _suspect(label, counts)
        if why:
            suspects.append((first[label], why, intended))
    if not suspects:
        return
    row, why, intended = suspects[0]
    others = "; ".join(
        f"{r.label!r} ({r.file.name} line {r.line})" for r, _, _ in suspects[1 : MAX_LISTED + 1]
    )
    kept = [lab for lab in sorted(counts) if lab not in {r.label for r, _, _ in suspects}]
    hint = f" (did you mean {intended!r}?)" if intended else ""
    raise DataError(
        f"{adapter}: {row.file} line {row.line}: label {row.label!r} of {row.sample_id} "
        f"{why}; it would silently become a class of its own"
        + (f" (also suspect: {others})" if others else "")
        + f". Fix the row{hint}, or, if it is a real class, declare the class list in "
        f"params.yaml: `{classes_key}: [{', '.join([*kept, row.label])}]`"
    )


def _suspect(label: str, counts: Counter[str]) -> tuple[str, str | None]:
    """Why `label` looks like a mistake among `counts` ("" when it looks like a real class),
    and the label likely meant instead (None when there is none)."""
    n = counts[label]
    folded = label.casefold()
    alike = [
        other
        for other in counts
        if other != label
        and (
            (other.casefold() == folded and counts[other] >= n)  # `Happy` beside `happy`
            or (
                counts[other] >= TYPO_MIN_RATIO * n
                and difflib.SequenceMatcher(None, folded, other.casefold()).ratio()
                >= TYPO_SIMILARITY
            )
        )
    ]
    if alike:
        best = max(alike, key=lambda o: (counts[o], -abs(len(o) - len(label))))
        return f"occurs {n} time(s) and looks like a typo of {best!r} ({counts[best]} rows)", best
    others = [c for lab, c in counts.items() if lab != label]
    if n == 1 and others and statistics.median(others) >= SINGLETON_MIN_TYPICAL:
        why = f"occurs only once while the other labels occur {min(others)} to {max(others)} times"
        return why, None
    return "", None


def _did_you_mean(label: str, classes: Sequence[str]) -> str:
    folded = {c.casefold(): c for c in classes}
    close = difflib.get_close_matches(label.casefold(), list(folded), n=1, cutoff=TYPO_SIMILARITY)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""


def shortlist(items: Sequence[str], limit: int = 5) -> str:
    """The first few items for an error message, with the total when some are left out."""
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")
