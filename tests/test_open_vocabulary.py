"""The MER-OV open-vocabulary metric: the reference's exact values and its parsing rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from robustmer.errors import DataError
from robustmer.evaluation.open_vocabulary import (
    ov_score,
    parse_groups,
    parse_word_list,
    read_openset,
    read_synonyms,
    score_files,
    synonym_map,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mer-ov"


def mer_ov() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the MER-OV example files ship beside the project only")
    return SHARED


def write_csv(path: Path, rows: dict[str, str]) -> Path:
    lines = ["name,openset", *(f'{name},"{value}"' for name, value in rows.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.shared_data
def test_reference_values_on_the_example_files() -> None:
    folder = mer_ov()
    gt, pred = folder / "check-openset.csv", folder / "predict-openset.csv"
    grouped = score_files(gt, pred, folder / "synonym-groups.json")
    assert (round(grouped.accuracy, 6), round(grouped.recall, 6)) == (0.581777, 0.497791)
    assert round(grouped.score, 6) == 0.539784 and grouped.n_samples == 332
    # Without synonyms: the 0.2547 / 0.1757 is Python-literal parsing; the reference's
    # quote splitting breaks "don't believe" of one sample in two and scores 0.2542.
    literal = score_files(gt, pred, parsing="literal")
    assert (round(literal.accuracy, 4), round(literal.recall, 4)) == (0.2547, 0.1757)
    exact = score_files(gt, pred)
    assert (round(exact.accuracy, 4), round(exact.recall, 4)) == (0.2542, 0.1757)


@pytest.mark.shared_data
def test_cli_prints_the_reference_values() -> None:
    folder = mer_ov()
    proc = subprocess.run(
        [sys.executable, "-m", "robustmer.cli", "ov-score", str(folder / "check-openset.csv"),
         str(folder / "predict-openset.csv"), "--synonyms", str(folder / "synonym-groups.json"),
         "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    values = json.loads(proc.stdout)
    assert round(values["score"], 6) == 0.539784


def test_quote_handling_follows_the_reference_or_the_literal() -> None:
    text = """["don't believe", 'doubt', ', ']"""
    assert parse_word_list(text) == ["don", "t believe", "doubt"]
    assert parse_word_list(text, parsing="literal") == ["don't believe", "doubt", ","]
    assert parse_word_list("['happy', 'relaxed'] trailing ['x']") == ["happy", "relaxed"]
    assert parse_word_list("[]") == []


def test_groups_map_to_their_first_word_and_later_groups_win() -> None:
    groups = parse_groups("[['joyful', 'happy'], ['sad', 'down'], ['glad', 'happy']]")
    assert groups == [["joyful", "happy"], ["sad", "down"], ["glad", "happy"]]
    mapping = synonym_map(groups)
    assert mapping["happy"] == "glad" and mapping["joyful"] == "joyful" and mapping["down"] == "sad"


def test_hand_made_cases() -> None:
    lexicon = synonym_map([["happy", "joyful", "glad"]])
    truth = {"a": ["joyful"], "b": ["sad", "angry"], "c": ["happy"], "d": ["worried"]}
    predicted = {"a": ["glad"], "b": [], "c": ["happy", "tense"]}  # d: no prediction
    result = ov_score(truth, predicted, lexicon)
    # a: words only in synonyms match (1, 1); b: empty prediction (0, 0); c: (1/2, 1); d: (0, 0)
    assert result.accuracy == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert result.recall == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert result.score == pytest.approx((result.accuracy + result.recall) / 2)
    assert result.n_missing_predictions == 1
    assert ov_score(truth, predicted).accuracy == pytest.approx((0 + 0 + 0.5 + 0) / 4)


def test_words_are_lowercased_but_group_words_used_as_written(tmp_path: Path) -> None:
    gt = write_csv(tmp_path / "gt.csv", {"s1": "['Happy']"})
    pred = write_csv(tmp_path / "pred.csv", {"s1": "['JOYFUL']"})
    (tmp_path / "groups.txt").write_text("# comment\nhappy, joyful  # one group\nHappy, x\n")
    assert read_openset(gt) == {"s1": ["happy"]}
    assert score_files(gt, pred, tmp_path / "groups.txt").score == 1.0
    (tmp_path / "upper.txt").write_text("Happy, Joyful\n")
    assert score_files(gt, pred, tmp_path / "upper.txt").score == 0.0


def test_malformed_rows_and_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,openset\ns1,\"['happy']\"\ns2,happy sad\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv line 3 \(sample s2\).*list string"):
        read_openset(bad)
    with pytest.raises(DataError, match=r"line 2 \(sample s1\).*Python list"):
        read_openset(write_csv(tmp_path / "lit.csv", {"s1": "['happy', sad]"}), parsing="literal")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sample,labels\ns1,x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing column\(s\) \['name', 'openset'\]"):
        read_openset(wrong)
    (tmp_path / "g.json").write_text('{"s1": ["happy"]}')
    with pytest.raises(DataError, match="grouping string"):
        read_synonyms(tmp_path / "g.json")
