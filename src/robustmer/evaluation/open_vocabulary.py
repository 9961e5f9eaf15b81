"""The MER-OV open-vocabulary metric (MER2024), offline and exactly as the reference scores it.

Each sample has a set of free-form emotion words in the ground truth and in the prediction.
Words are first mapped through synonym groups (every word of a group to the group's first word;
the reference asks an LLM per sample, we read the groups from a file), then per sample

    accuracy = |G & P| / |P|   (0 when P is empty)      recall = |G & P| / |G|

averaged over the ground-truth samples, and `score = (accuracy + recall) / 2`.

Parsing follows the reference, not Python's literal syntax: a list string is cut between its
first `[` and the next `]` and split on both quote characters, so "don't" inside double quotes
stays one word where `ast.literal_eval` would differ, and scores match the reference's. Ground
truth and predicted words are lower-cased; group words are used as written. Facts:
../shared/spec/mer2024.md, "MER-OV metric".
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from robustmer.errors import DataError

COLUMNS = ("name", "openset")
PARSINGS = ("reference", "literal")
# Synonym groups: one map for every sample (a lexicon) or one per sample name (the reference's).
SynonymMap = dict[str, str]


@dataclass(frozen=True)
class OVScore:
    accuracy: float
    recall: float
    n_samples: int
    n_missing_predictions: int

    @property
    def score(self) -> float:
        return (self.accuracy + self.recall) / 2


def parse_word_list(text: str, where: str = "list", parsing: str = "reference") -> list[str]:
    """The words of one stringified list, "['happy', 'relaxed']" -> ['happy', 'relaxed'].

    `reference` splits on both quote characters as the official scorer does ("don't believe"
    becomes 'don' and 't believe', which is what the reference's synonym groups were made
    from); `literal` reads the string as a Python list literal and keeps such words whole.
    """
    if parsing not in PARSINGS:
        raise ValueError(f"parsing must be one of {PARSINGS}, not {parsing!r}")
    start = text.find("[")
    end = text.find("]", start + 1)
    if start < 0 or end < 0:
        raise DataError(
            f"{where}: {text!r} is not a list string such as \"['happy', 'relaxed']\" "
            "(it needs a '[' and a later ']'); fix the row"
        )
    if parsing == "reference":
        return _words(text[start + 1 : end])
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise DataError(
            f"{where}: {text!r} is not a Python list of strings ({type(exc).__name__}); fix the "
            "row, or score with the reference parsing"
        ) from exc
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise DataError(f"{where}: {text!r} is not a list of strings; fix the row")
    return [w.strip() for w in value if w.strip()]


def _words(inner: str) -> list[str]:
    pieces = inner.replace('"', "'").split("'")
    return [p.strip() for p in pieces if p.strip() not in ("", ",")]


def parse_groups(text: str) -> list[list[str]]:
    """The groups of a grouping string, "[['a', 'b'], ['c']]" -> [['a', 'b'], ['c']]."""
    pieces = text.replace("]", "[").split("[")
    return [words for words in map(_words, pieces) if words]


def synonym_map(groups: Iterable[list[str]]) -> SynonymMap:
    """word -> the first word of its group; a later group overwrites an earlier one."""
    out: SynonymMap = {}
    for group in groups:
        for word in group:
            out[word] = group[0]
    return out


def read_openset(path: Path, parsing: str = "reference") -> dict[str, list[str]]:
    """`name, openset` CSV -> name -> lower-cased words; errors name the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    out: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; an open-set CSV has the header "
                f"`{','.join(COLUMNS)}` and one row per sample"
            )
        for line, row in enumerate(reader, start=2):
            name = (row["name"] or "").strip()
            if not name:
                raise DataError(f"{path} line {line}: empty sample name")
            where = f"{path} line {line} (sample {name})"
            words = parse_word_list(row["openset"] or "", where, parsing)
            out[name] = [w.lower() for w in words]
    return out


def read_synonyms(path: Path) -> SynonymMap | dict[str, SynonymMap]:
    """A synonym file: the reference's per-sample JSON (name -> grouping string, as in
    ../shared/data/mer-ov/synonym-groups.json) or a lexicon, one group per line, its words
    separated by commas, the first word the group's name (`#` starts a comment)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: synonym file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise DataError(
                f"{path}: expected an object of sample name -> grouping string such as "
                "\"[['happy', 'joyful'], ['sad']]\""
            )
        return {name: synonym_map(parse_groups(groups)) for name, groups in raw.items()}
    groups = []
    for line in text.splitlines():
        words = [w.strip() for w in line.split("#", 1)[0].split(",") if w.strip()]
        if words:
            groups.append(words)
    return synonym_map(groups)


def ov_score(
    truth: Mapping[str, list[str]],
    predicted: Mapping[str, list[str]],
    synonyms: SynonymMap | Mapping[str, SynonymMap] | None = None,
) -> OVScore:
    """Set-level accuracy and recall averaged over the ground-truth samples.

    `synonyms` is one map for all samples, or one per sample name (a sample without one is
    matched exactly). A sample with no prediction counts as an empty prediction (accuracy and
    recall 0); one with an empty ground truth has recall 0.
    """
    accuracy = recall = 0.0
    for name, words in truth.items():
        mapping = _mapping(synonyms, name)
        gt = {mapping.get(w, w) for w in words}
        pred = {mapping.get(w, w) for w in predicted.get(name, [])}
        hits = len(gt & pred)
        accuracy += hits / len(pred) if pred else 0.0
        recall += hits / len(gt) if gt else 0.0
    n = len(truth)
    if n == 0:
        raise DataError("the ground truth has no samples")
    missing = sum(1 for name in truth if name not in predicted)
    return OVScore(accuracy / n, recall / n, n, missing)


def _mapping(synonyms: SynonymMap | Mapping[str, SynonymMap] | None, name: str) -> SynonymMap:
    """The synonym map of sample `name`: the shared one, its own, or none."""
    if not synonyms:
        return {}
    if any(isinstance(v, Mapping) for v in synonyms.values()):
        own = synonyms.get(name)
        return own if isinstance(own, dict) else {}
    return synonyms  # type: ignore[return-value]  # one map for every sample


def score_files(
    truth: Path, predicted: Path, synonyms: Path | None = None, parsing: str = "reference"
) -> OVScore:
    """`robustmer ov-score`: the metric of two open-set CSVs with an optional synonym file."""
    groups = read_synonyms(synonyms) if synonyms is not None else None
    return ov_score(read_openset(truth, parsing), read_openset(predicted, parsing), groups)
