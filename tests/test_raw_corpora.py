"""Raw-corpus adapters: names parsed right, speaker-independent folds, media hashes, options, and
every bad input a DataError that names the file and leaves the output folder empty."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dataset_fixtures_raw import (
    EMODB_SPEAKERS,
    build_emodb,
    build_folder,
    build_meld,
    build_ravdess,
    meld_rows,
    ravdess_name,
    write_labels,
    write_meld_csv,
    write_mp4,
    write_wav,
)

from robustmer.data.adapters.emodb import EMODB_CLASSES, prepare_emodb
from robustmer.data.adapters.folder import prepare_folder
from robustmer.data.adapters.meld import MELD_CLASSES, fix_mojibake, prepare_meld
from robustmer.data.adapters.ravdess import RAVDESS_CLASSES, prepare_ravdess
from robustmer.data.adapters.raw_layout import round_robin_folds
from robustmer.errors import ConfigError, DataError
from robustmer.features.extract import read_raw_corpus
from robustmer.io import sha256_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPUS_KEYS = {"dataset", "kind", "adapter", "classes", "source", "n_samples", "protocol"}

Adapter = Callable[[Path, Path, dict[str, Any]], dict[str, Any]]


def prepare(
    adapter: Adapter, source: Path, out: Path, **options: Any
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Run an adapter into a fresh `out` and read the result back as the extract stage does."""
    out.mkdir(parents=True, exist_ok=True)
    result = adapter(source, out, options)
    frame, info = read_raw_corpus(out)
    return frame, info, result


def fails(adapter: Adapter, source: Path, out: Path, match: str, **options: Any) -> str:
    """The adapter raises a DataError matching `match` and writes nothing into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError, match=match) as err:
        adapter(source, out, options)
    assert list(out.iterdir()) == [], "a failed adapter must not leave files behind"
    return str(err.value)


def assert_speaker_independent(frame: pd.DataFrame) -> None:
    assert (frame.groupby("speaker")["fold"].nunique() == 1).all()


def assert_media_hashed(frame: pd.DataFrame, modality: str) -> None:
    for path, digest in zip(frame[f"{modality}_path"], frame[f"{modality}_sha256"], strict=True):
        assert Path(path).is_absolute() and Path(path).is_file()
        assert digest == sha256_file(path)


# ---------------------------------------------------------------------------------------------
# RAVDESS


@pytest.fixture(scope="module")
def ravdess_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ravdess(tmp_path_factory.mktemp("ravdess"), song=True)


def test_ravdess_parses_names_into_labels_speakers_and_media(
    ravdess_src: Path, tmp_path: Path
) -> None:
    frame, info, result = prepare(prepare_ravdess, ravdess_src, tmp_path / "out", n_folds=2)
    assert len(frame) == 4 * 8  # 4 actors x 8 emotions, speech only
    assert set(info) >= CORPUS_KEYS
    assert info["kind"] == "raw" and info["adapter"] == "ravdess" and info["dataset"] == "ravdess"
    assert info["classes"] == list(RAVDESS_CLASSES) and info["protocol"] == "speaker_folds"
    assert info["source"] == ravdess_src.as_posix() and info["n_folds"] == 2
    assert result["n_samples"] == 32 and result["label_counts"]["calm"] == 4
    row = frame.set_index("sample_id").loc["01-04-02-01-01-03"]  # sad, strong, actor 3
    assert (row["speaker"], row["label"], row["intensity"]) == ("actor_03", "sad", "strong")
    assert (row["gender"], row["statement"], row["channel"]) == ("male", 1, "speech")
    assert Path(row["audio_path"]).name == "03-01-04-02-01-01-03.wav"
    assert Path(row["video_path"]).name == "02-01-04-02-01-01-03.mp4"
    assert frame.loc[frame["speaker"] == "actor_04", "gender"].eq("female").all()
    assert "text" not in frame.columns
    assert_media_hashed(frame, "audio")
    assert_media_hashed(frame, "video")
    assert list(frame["sample_id"]) == sorted(frame["sample_id"], key=lambda s: (s[-2:], s))


def test_ravdess_folds_are_actor_independent_with_both_genders(
    ravdess_src: Path, tmp_path: Path
) -> None:
    frame, _, _ = prepare(prepare_ravdess, ravdess_src, tmp_path / "out", n_folds=2)
    assert_speaker_independent(frame)
    assert dict(frame.groupby("speaker")["fold"].first()) == {
        "actor_01": 0,
        "actor_02": 0,
        "actor_03": 1,
        "actor_04": 1,
    }
    for _, fold in frame.groupby("fold"):
        assert set(fold["gender"]) == {"male", "female"}
        assert fold["speaker"].nunique() == 2


def test_ravdess_fold_assignment_balances_gender_on_all_24_actors() -> None:
    actors = [f"actor_{a:02d}" for a in range(1, 25)]
    genders = {s: "male" if int(s[-2:]) % 2 else "female" for s in actors}
    folds = round_robin_folds(actors, 6, strata=genders)
    for fold in range(6):
        members = [s for s in actors if folds[s] == fold]
        assert sorted(genders[s] for s in members) == ["female", "female", "male", "male"]
    assert folds["actor_01"] == folds["actor_13"] == folds["actor_02"] == 0


def test_ravdess_song_channel_and_merge_calm(ravdess_src: Path, tmp_path: Path) -> None:
    speech, info, _ = prepare(prepare_ravdess, ravdess_src, tmp_path / "a", n_folds=2)
    assert info["excluded_other_channel"] == 4 * 6 * 2  # song wav + mp4 files left out
    both, info, _ = prepare(
        prepare_ravdess, ravdess_src, tmp_path / "b", n_folds=2, channels=["speech", "song"]
    )
    assert len(both) == len(speech) + 4 * 6
    assert set(both["channel"]) == {"speech", "song"}
    assert both["sample_id"].is_unique  # the channel field keeps song and speech ids apart
    merged, info, _ = prepare(
        prepare_ravdess, ravdess_src, tmp_path / "c", n_folds=2, merge_calm=True
    )
    assert "calm" not in info["classes"] and info["classes"][0] == "neutral"
    assert (merged["label"] == "neutral").sum() == 8
    assert set(merged.loc[merged["emotion"] == "calm", "label"]) == {"neutral"}


def test_ravdess_text_option_gives_the_statement(ravdess_src: Path, tmp_path: Path) -> None:
    frame, info, _ = prepare(prepare_ravdess, ravdess_src, tmp_path / "out", n_folds=2, text=True)
    by_statement = frame.groupby("statement")["text"].unique()
    assert list(by_statement[1]) == ["Kids are talking by the door"]
    assert list(by_statement[2]) == ["Dogs are sitting by the door"]
    assert "text" in info["modalities"]


def test_ravdess_video_prefers_video_only_then_full_av(tmp_path: Path) -> None:
    src = build_ravdess(tmp_path / "src", actors=(1, 2), emotions=(1, 3), modalities=(3, 1))
    write_mp4(src / "Actor_01" / ravdess_name(2, 1, 1, statement=2))  # also video-only
    frame, _, _ = prepare(prepare_ravdess, src, tmp_path / "out", n_folds=2)
    names = frame["video_path"].map(lambda p: Path(p).name)
    videos = dict(zip(frame["sample_id"], names, strict=True))
    assert videos["01-01-01-02-01-01"] == "02-01-01-01-02-01-01.mp4"
    assert videos["01-03-01-02-01-01"] == "01-01-03-01-02-01-01.mp4"


def test_ravdess_reports_files_whose_names_do_not_match(tmp_path: Path) -> None:
    src = build_ravdess(tmp_path / "src", actors=(1, 2), emotions=(1, 3), modalities=(3,))
    (src / "README.txt").write_text("read me", encoding="utf-8")
    write_wav(src / "Actor_01" / "03-01-01.wav")
    (src / ".DS_Store").write_bytes(b"\0")
    frame, info, result = prepare(prepare_ravdess, src, tmp_path / "out", n_folds=2)
    assert len(frame) == 4 and "video_path" not in frame.columns
    skipped = {Path(e["path"]).name: e["reason"] for e in info["skipped"]["files"]}
    assert set(skipped) == {"README.txt", "03-01-01.wav"}
    assert "MM-VV-EE-II-SS-RR-AA" in skipped["03-01-01.wav"]
    assert info["skipped"]["count"] == 2 and result["skipped"] == 2


def test_ravdess_unknown_emotion_code_raises_unless_skipped(tmp_path: Path) -> None:
    src = build_ravdess(tmp_path / "src", actors=(1, 2), emotions=(1, 3), modalities=(3,))
    bad = write_wav(src / "Actor_02" / "03-01-09-01-01-01-02.wav")
    msg = fails(prepare_ravdess, src, tmp_path / "out", "unknown label", n_folds=2)
    assert str(bad) in msg and "skip_invalid" in msg
    frame, info, _ = prepare(prepare_ravdess, src, tmp_path / "out2", n_folds=2, skip_invalid=True)
    assert len(frame) == 4
    assert info["skipped"]["files"][0]["path"] == bad.as_posix()
    assert "emotion field 09" in info["skipped"]["files"][0]["reason"]


@pytest.mark.parametrize(
    ("name", "folder", "reason"),
    [
        ("03-03-01-01-01-01-01.wav", "Actor_01", "channel field 03"),
        ("03-01-01-01-01-01-25.wav", "Actor_25", "actor field 25"),
        ("02-01-01-01-01-01-01.wav", "Actor_01", "should be a .mp4"),
        ("03-01-01-01-01-02-02.wav", "Actor_01", "lies in Actor_01"),
    ],
)
def test_ravdess_malformed_fields_name_the_file(
    tmp_path: Path, name: str, folder: str, reason: str
) -> None:
    src = build_ravdess(tmp_path / "src", actors=(1, 2), emotions=(1,), modalities=(3,))
    bad = write_wav(src / folder / name)
    msg = fails(prepare_ravdess, src, tmp_path / "out", reason, n_folds=2)
    assert str(bad) in msg


def test_ravdess_incomplete_modalities(tmp_path: Path) -> None:
    src = build_ravdess(tmp_path / "src", actors=(1, 2), emotions=(1, 3), modalities=(3, 2))
    (src / "Actor_02" / ravdess_name(2, 3, 2, intensity=1, statement=2)).unlink()
    msg = fails(prepare_ravdess, src, tmp_path / "out", "lack a modality", n_folds=2)
    assert "01-03-01-02-01-02" in msg and "drop_incomplete" in msg
    frame, info, _ = prepare(prepare_ravdess, src, tmp_path / "a", n_folds=2, drop_incomplete=True)
    assert len(frame) == 3 and info["dropped_incomplete"]["count"] == 1
    frame, info, _ = prepare(prepare_ravdess, src, tmp_path / "b", n_folds=2, modalities=["audio"])
    assert len(frame) == 4 and "video_path" not in frame.columns
    assert info["modalities"] == ["audio"]


def test_ravdess_duplicate_copies(tmp_path: Path) -> None:
    src = build_ravdess(tmp_path / "src", actors=(1, 2), emotions=(1,), modalities=(3,))
    copy = src / "audio_speech_actors_01-24" / "Actor_01"
    copy.mkdir(parents=True)
    original = src / "Actor_01" / ravdess_name(3, 1, 1, statement=2)
    shutil.copy(original, copy / original.name)
    frame, info, _ = prepare(prepare_ravdess, src, tmp_path / "a", n_folds=2)
    assert len(frame) == 2 and "identical copy" in info["skipped"]["files"][0]["reason"]
    write_wav(copy / original.name, freq=999.0)
    msg = fails(prepare_ravdess, src, tmp_path / "b", "two different files", n_folds=2)
    assert str(copy / original.name) in msg


def test_ravdess_fewer_actors_than_folds(tmp_path: Path) -> None:
    src = build_ravdess(tmp_path / "src", actors=(1, 2), emotions=(1,), modalities=(3,))
    msg = fails(prepare_ravdess, src, tmp_path / "out", "2 speaker", n_folds=6)
    assert "n_folds=6" in msg and str(src) in msg


def test_ravdess_empty_source_and_bad_options(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    fails(prepare_ravdess, tmp_path / "src", tmp_path / "out", "no RAVDESS recordings")
    with pytest.raises(ConfigError, match="merge_clam"):
        prepare_ravdess(tmp_path / "src", tmp_path / "out", {"merge_clam": True})
    with pytest.raises(ConfigError, match="channels"):
        prepare_ravdess(tmp_path / "src", tmp_path / "out", {"channels": ["speech", "opera"]})
    fails(prepare_ravdess, tmp_path / "absent", tmp_path / "out", "does not exist")


# ---------------------------------------------------------------------------------------------
# EmoDB


@pytest.fixture(scope="module")
def emodb_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emodb")
    build_emodb(root)
    return root


def test_emodb_parses_names(emodb_src: Path, tmp_path: Path) -> None:
    frame, info, _ = prepare(prepare_emodb, emodb_src, tmp_path / "out")
    assert len(frame) == 70 and info["classes"] == list(EMODB_CLASSES)
    assert info["n_folds"] == 5 and info["n_speakers"] == 10
    assert sorted(frame["speaker"].unique()) == list(EMODB_SPEAKERS)  # "03" stays a string
    row = frame.set_index("sample_id").loc["03a01Wa"]
    assert (row["speaker"], row["label"], row["text_code"]) == ("03", "anger", "a01")
    letters = frame["sample_id"].str[5].map(dict(zip("WLEAFTN", EMODB_CLASSES, strict=True)))
    assert (letters == frame["label"]).all()
    assert set(frame["label"].value_counts()) == {10}
    assert_media_hashed(frame, "audio")
    assert info["skipped"]["count"] == 0  # the documentation beside wav/ is not looked at


def test_emodb_folds_are_speaker_independent_round_robin(emodb_src: Path, tmp_path: Path) -> None:
    frame, _, _ = prepare(prepare_emodb, emodb_src, tmp_path / "out")
    assert_speaker_independent(frame)
    folds = frame.groupby("speaker")["fold"].first()
    assert list(folds) == [i % 5 for i in range(10)]
    frame, info, _ = prepare(prepare_emodb, emodb_src, tmp_path / "b", n_folds=2)
    assert sorted(frame["fold"].unique()) == [0, 1] and info["n_folds"] == 2


def test_emodb_text_option_and_flat_layout(tmp_path: Path) -> None:
    build_emodb(tmp_path / "src", speakers=("03", "08"), subfolder=False)
    (tmp_path / "src" / "notes.txt").write_text("x", encoding="utf-8")
    frame, info, _ = prepare(
        prepare_emodb, tmp_path / "src", tmp_path / "out", n_folds=2, text=True
    )
    assert len(frame) == 14 and (frame["text"] == frame["text_code"]).all()
    assert info["skipped"]["files"][0]["path"].endswith("notes.txt")


def test_emodb_unknown_letter_raises_unless_skipped(tmp_path: Path) -> None:
    wav_dir = build_emodb(tmp_path / "src", speakers=("03", "08"))
    bad = write_wav(wav_dir / "03a01Xa.wav")
    msg = fails(prepare_emodb, tmp_path / "src", tmp_path / "out", "unknown emotion", n_folds=2)
    assert str(bad) in msg
    frame, info, _ = prepare(
        prepare_emodb, tmp_path / "src", tmp_path / "b", n_folds=2, skip_invalid=True
    )
    assert len(frame) == 14 and info["skipped"]["count"] == 1


def test_emodb_fewer_speakers_than_folds_and_empty(tmp_path: Path) -> None:
    build_emodb(tmp_path / "src", speakers=("03", "08", "09"))
    fails(prepare_emodb, tmp_path / "src", tmp_path / "out", "3 speaker.*n_folds=5")
    (tmp_path / "empty").mkdir()
    fails(prepare_emodb, tmp_path / "empty", tmp_path / "out2", "no EmoDB wav files")


# ---------------------------------------------------------------------------------------------
# MELD


def test_meld_splits_ids_labels_and_text(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src")
    frame, info, result = prepare(prepare_meld, src, tmp_path / "out")
    assert info["protocol"] == "splits" and info["classes"] == list(MELD_CLASSES)
    assert info["split_counts"] == {"train": 9, "valid": 4, "test": 6}
    assert result["split_counts"] == info["split_counts"] and "video_path" not in frame.columns
    assert list(frame["split"].unique()) == ["train", "valid", "test"]
    row = frame.set_index("sample_id").loc["valid_dia1_utt0"]  # dev row 4
    assert (row["label"], row["speaker"], row["sentiment"]) == ("anger", "Rachel", "negative")
    assert row["text"] == "Line number 3 isn’t short."
    assert "fold" not in frame.columns and info["mojibake_fixed"] == 0


def test_meld_fixes_mojibake_only_where_present(tmp_path: Path) -> None:
    assert fix_mojibake("You must\u00e2\u20ac\u2122ve had") == "You must’ve had"
    assert fix_mojibake("\u00e2\u20ac\u0153Hi\u00e2\u20ac\x9d") == "“Hi”"
    assert fix_mojibake("Caf\u00c3\u00a9") == "Café"
    for clean in ("You must’ve had your hands full.", "São Paulo — “ok”", "plain"):
        assert fix_mojibake(clean) == clean
    src = build_meld(tmp_path / "src")
    texts = ["It\u00e2\u20ac\u2122s me", "It’s fine"]
    write_meld_csv(src / "train_sent_emo.csv", meld_rows(9, texts=texts))
    frame, info, _ = prepare(prepare_meld, src, tmp_path / "out")
    assert list(frame["text"][:2]) == ["It’s me", "It’s fine"] and info["mojibake_fixed"] == 1


def test_meld_max_per_split_keeps_first_rows_in_file_order(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src")
    rows = meld_rows(9)
    write_meld_csv(src / "train_sent_emo.csv", rows[::-1])  # file order differs from id order
    frame, info, _ = prepare(prepare_meld, src, tmp_path / "a", max_per_split=2)
    assert info["split_counts"] == {"train": 2, "valid": 2, "test": 2}
    assert set(frame.loc[frame["split"] == "train", "sample_id"]) == {
        "train_dia2_utt2",
        "train_dia2_utt1",
    }
    frame, info, _ = prepare(prepare_meld, src, tmp_path / "b", max_per_split={"test": 1})
    assert info["split_counts"] == {"train": 9, "valid": 4, "test": 1}
    with pytest.raises(ConfigError, match="max_per_split"):
        prepare_meld(src, tmp_path / "c", {"max_per_split": {"dev": 1}})


def test_meld_duplicate_id_names_csv_and_id(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src")
    rows = meld_rows(4)
    rows[3]["Dialogue_ID"], rows[3]["Utterance_ID"] = 0, 0  # the id of line 2 again
    write_meld_csv(src / "dev_sent_emo.csv", rows)
    msg = fails(prepare_meld, src, tmp_path / "out", "duplicate sample id valid_dia0_utt0")
    assert str(src / "dev_sent_emo.csv") in msg and "line 5" in msg


def test_meld_unknown_emotion_names_row_and_value(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src")
    rows = meld_rows(6)
    rows[2]["Emotion"] = "contempt"
    write_meld_csv(src / "test_sent_emo.csv", rows)
    msg = fails(prepare_meld, src, tmp_path / "out", "unknown emotion 'contempt' of test_dia0_utt2")
    assert f"{src / 'test_sent_emo.csv'} line 4" in msg and "fixed" in msg
    rows[2]["Emotion"] = "sadnes"
    write_meld_csv(src / "test_sent_emo.csv", rows)
    fails(prepare_meld, src, tmp_path / "typo", "Did you mean 'sadness'")


def test_meld_missing_csv_or_columns(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src")
    (src / "dev_sent_emo.csv").unlink()
    fails(prepare_meld, src, tmp_path / "a", "dev_sent_emo.csv is missing")
    pd.DataFrame({"Utterance": ["x"]}).to_csv(src / "dev_sent_emo.csv", index=False)
    fails(prepare_meld, src, tmp_path / "b", "lacks column")


def test_meld_clips_found_under_source(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src", clips=True)
    frame, info, _ = prepare(prepare_meld, src, tmp_path / "out")
    assert_media_hashed(frame, "video")
    row = frame.set_index("sample_id").loc["test_dia1_utt2"]
    assert Path(row["video_path"]) == src / "output_repeated_splits_test" / "dia1_utt2.mp4"
    assert info["clip_dirs"]["valid"] == (src / "dev_splits_complete").as_posix()
    frame, info, _ = prepare(prepare_meld, src, tmp_path / "text", clips=False)
    assert "video_path" not in frame.columns and info["modalities"] == ["text"]


def test_meld_clips_in_another_folder(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src", clips=True, clip_root=tmp_path / "MELD.Raw")
    frame, _, _ = prepare(prepare_meld, src, tmp_path / "auto", clips=None)
    assert "video_path" not in frame.columns  # nothing under source: text only
    frame, _, _ = prepare(prepare_meld, src, tmp_path / "out", clips=str(tmp_path / "MELD.Raw"))
    assert frame["video_path"].str.startswith((tmp_path / "MELD.Raw").as_posix()).all()


def test_meld_missing_clips_raise_or_drop(tmp_path: Path) -> None:
    src = build_meld(tmp_path / "src", clips=True)
    gone = src / "train_splits" / "dia1_utt1.mp4"
    gone.unlink()
    msg = fails(prepare_meld, src, tmp_path / "a", "1 clip")
    assert str(gone) in msg and "drop_missing_clips" in msg
    frame, info, result = prepare(prepare_meld, src, tmp_path / "b", drop_missing_clips=True)
    assert "train_dia1_utt1" not in set(frame["sample_id"]) and len(frame) == 18
    assert info["skipped"]["files"][0]["path"] == gone.as_posix() and result["skipped"] == 1


# ---------------------------------------------------------------------------------------------
# generic folder


def test_folder_basic_labels_speakers_and_folds(tmp_path: Path) -> None:
    src = build_folder(tmp_path / "src")
    frame, info, _ = prepare(prepare_folder, src, tmp_path / "out", n_folds=2)
    assert info["classes"] == ["angry", "happy", "sad"]  # sorted by default
    assert len(frame) == 12 and info["adapter"] == "folder" and info["protocol"] == "speaker_folds"
    row = frame.set_index("sample_id").loc["bob__take_1"]
    assert (row["speaker"], row["label"], row["text"]) == ("bob", "happy", "bob says take 1")
    assert Path(row["audio_path"]) == src / "bob" / "take_1.wav"
    assert_media_hashed(frame, "audio")
    assert_speaker_independent(frame)
    assert dict(frame.groupby("speaker")["fold"].first()) == {
        "ann": 0,
        "bob": 1,
        "cat": 0,
        "dan": 1,
    }
    assert list(frame["sample_id"]) == sorted(frame["sample_id"])


def test_folder_default_speaker_is_each_file(tmp_path: Path) -> None:
    src = build_folder(tmp_path / "src", speaker_column=False, text_column=False)
    frame, _, _ = prepare(prepare_folder, src, tmp_path / "out")
    assert (frame["speaker"] == frame["sample_id"]).all() and "text" not in frame.columns
    assert sorted(frame["fold"].value_counts()) == [2, 2, 2, 3, 3]


def test_folder_given_folds_splits_and_classes(tmp_path: Path) -> None:
    folds = [str(i // 3 % 2) for i in range(12)]
    src = build_folder(tmp_path / "src", extra={"fold": folds})
    frame, _, _ = prepare(
        prepare_folder, src, tmp_path / "a", classes=["sad", "happy", "angry", "bored"]
    )
    assert list(frame.groupby("speaker")["fold"].first()) == [0, 1, 0, 1]
    info = json.loads((tmp_path / "a" / "corpus.json").read_text())
    assert info["classes"] == ["sad", "happy", "angry", "bored"]
    splits = ["train"] * 6 + ["dev"] * 3 + ["test"] * 3
    src = build_folder(tmp_path / "src2", extra={"split": splits})
    frame, info, _ = prepare(prepare_folder, src, tmp_path / "b")
    assert info["split_counts"] == {"train": 6, "valid": 3, "test": 3}
    assert info["protocol"] == "splits" and "fold" not in frame.columns


def test_folder_video_files_and_explicit_columns(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rows = []
    for i in range(4):
        write_mp4(src / "clips" / f"c{i}.mp4", shade=i * 30, frames=2)
        write_wav(src / "sound" / f"c{i}.wav", freq=300.0 + i)
        rows.append({"audio": f"sound/c{i}.wav", "video": f"clips/c{i}.mp4", "label": "x"})
    write_labels(src / "labels.csv", rows)
    frame, info, _ = prepare(prepare_folder, src, tmp_path / "a", n_folds=2)
    assert_media_hashed(frame, "audio")
    assert_media_hashed(frame, "video")
    assert frame["sample_id"].iloc[0] == "sound__c0" and info["modalities"] == ["audio", "video"]
    write_labels(src / "labels.csv", [{"file": r["video"], "label": "x"} for r in rows])
    frame, _, _ = prepare(prepare_folder, src, tmp_path / "b", n_folds=2)
    assert "video_path" in frame.columns and "audio_path" not in frame.columns
    mixed = [{"file": rows[0]["video"], "label": "x"}, {"file": rows[1]["audio"], "label": "x"}]
    write_labels(src / "labels.csv", mixed)
    fails(prepare_folder, src, tmp_path / "c", "mixes audio and video", n_folds=2)


def test_folder_bad_inputs_name_the_row(tmp_path: Path) -> None:
    src = build_folder(tmp_path / "src")
    table = pd.read_csv(src / "labels.csv", dtype=str)

    def write(frame: pd.DataFrame) -> None:
        frame.to_csv(src / "labels.csv", index=False)

    write(pd.concat([table, table.iloc[[4]]]))
    msg = fails(prepare_folder, src, tmp_path / "dup", "duplicate sample id bob__take_1", n_folds=2)
    assert "lines 6, 14" in msg and str(src / "labels.csv") in msg
    broken = table.copy()
    broken.loc[7, "file"] = "cat/take_9.wav"
    write(broken)
    msg = fails(prepare_folder, src, tmp_path / "missing", "line 9: audio file", n_folds=2)
    assert str(src / "cat" / "take_9.wav") in msg
    write(table)
    msg = fails(
        prepare_folder, src, tmp_path / "cls", "label 'sad' of ann__take_0", classes=["happy"]
    )
    assert "line 2" in msg
    fails(prepare_folder, src, tmp_path / "few", "4 speaker.*n_folds=5")
    leaking = table.assign(fold=[str(i % 2) for i in range(12)])
    write(leaking)
    fails(prepare_folder, src, tmp_path / "leak", "more than one fold")
    write(table.assign(fold=["1"] * 6 + ["2"] * 6))
    fails(prepare_folder, src, tmp_path / "gap", "numbered 0, 1")
    write(table.assign(split=["train"] * 12))
    fails(prepare_folder, src, tmp_path / "nosplit", r"no rows in split\(s\) \['test'\]")
    (src / "labels.csv").unlink()
    fails(prepare_folder, src, tmp_path / "nolabels", "labels table")


def _relabel(src: Path, changes: dict[int, str]) -> None:
    """Overwrite the label of labels.csv data rows (0-based; row i is on line i + 2)."""
    table = pd.read_csv(src / "labels.csv", dtype=str)
    for row, label in changes.items():
        table.loc[row, "label"] = label
    table.to_csv(src / "labels.csv", index=False)


def test_folder_label_typo_without_classes_is_refused(tmp_path: Path) -> None:
    src = build_folder(tmp_path / "src")
    _relabel(src, {4: "hapy"})  # bob/take_1, line 6; happy stays on the other three speakers
    msg = fails(prepare_folder, src, tmp_path / "typo", "label 'hapy' of bob__take_1", n_folds=2)
    assert f"{src / 'labels.csv'} line 6" in msg and "did you mean 'happy'?" in msg
    assert "`acquire.folder.classes: [angry, happy, sad, hapy]`" in msg
    _relabel(src, {4: "happy", 1: "Happy", 7: "Happy"})  # a case variant, even as frequent
    fails(prepare_folder, src, tmp_path / "case", "label 'Happy' of ann__take_1.*typo of 'happy'")


def test_folder_one_off_label_among_frequent_ones_is_refused(tmp_path: Path) -> None:
    src = build_folder(tmp_path / "src")
    _relabel(src, {11: "contempt"})  # dan/take_2 (angry), line 13
    msg = fails(prepare_folder, src, tmp_path / "out", "label 'contempt' of dan__take_2", n_folds=2)
    assert "line 13" in msg and "occurs only once while the other labels occur 3 to 4 times" in msg
    _, info, _ = prepare(  # declared, it is a class of its own
        prepare_folder,
        src,
        tmp_path / "ok",
        n_folds=2,
        classes=["angry", "happy", "sad", "contempt"],
    )
    assert info["label_counts"]["contempt"] == 1


def test_folder_rare_or_alike_genuine_classes_pass(tmp_path: Path) -> None:
    src = build_folder(tmp_path / "src", labels=("happy", "unhappy", "calm"))
    _, info, _ = prepare(prepare_folder, src, tmp_path / "alike", n_folds=2)
    assert info["classes"] == ["calm", "happy", "unhappy"]
    src = build_folder(tmp_path / "tiny", speakers=("ann", "bob"), labels=("a", "b", "c"))
    _relabel(src, {5: "d"})  # every class is rare: a, b twice, c and d once
    _, info, _ = prepare(prepare_folder, src, tmp_path / "rare", n_folds=2)
    assert info["label_counts"] == {"a": 2, "b": 2, "c": 1, "d": 1}


def test_folder_registry_classes_are_the_declared_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import robustmer.data.adapters.folder as folder_mod

    registered = SimpleNamespace(expected={"classes": ["angry", "happy", "sad"]})
    monkeypatch.setattr(folder_mod, "dataset_info", lambda name: registered)
    src = build_folder(tmp_path / "src")
    _relabel(src, {9: "bored", 10: "bored", 11: "bored"})  # all of dan's rows: no typo pattern
    msg = fails(prepare_folder, src, tmp_path / "out", "label 'bored' of dan__take_0", n_folds=2)
    assert "line 11" in msg and "not one of the declared classes ['angry', 'happy', 'sad']" in msg


def test_folder_bad_label_at_acquire_keeps_the_previous_raw_copy(tmp_path: Path) -> None:
    from robustmer.data.acquire import acquire

    src = build_folder(tmp_path / "src")
    out = tmp_path / "data" / "raw" / "folder"
    params = {"dataset": "folder", "acquire": {"folder": {"path": str(src), "n_folds": 2}}}
    acquire(params, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _relabel(src, {4: "hapy"})
    with pytest.raises(DataError, match="label 'hapy' of bob__take_1"):
        acquire(params, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["folder"]


def test_folder_labels_option_and_unknown_extension(tmp_path: Path) -> None:
    src = build_folder(tmp_path / "src")
    (src / "labels.csv").rename(src / "meta.csv")
    frame, info, _ = prepare(prepare_folder, src, tmp_path / "a", labels="meta.csv", n_folds=2)
    assert len(frame) == 12 and info["labels_file"] == (src / "meta.csv").as_posix()
    (src / "notes.txt").write_text("x", encoding="utf-8")
    write_labels(src / "meta.csv", [{"file": "notes.txt", "label": "x"}])
    fails(prepare_folder, src, tmp_path / "b", "not a known media file", labels="meta.csv")


# ---------------------------------------------------------------------------------------------
# the real samples in ../shared/data (skipped in a fresh clone without them)


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real-corpus samples live beside the project only")
    return path


@pytest.mark.shared_data
def test_shared_emodb(tmp_path: Path) -> None:
    frame, info, _ = prepare(prepare_emodb, _shared("emodb"), tmp_path / "out")
    assert len(frame) == 535 and frame["speaker"].nunique() == 10
    assert set(frame["label"]) == set(EMODB_CLASSES) and info["n_folds"] == 5
    assert sorted(frame["fold"].unique()) == [0, 1, 2, 3, 4] and info["skipped"]["count"] == 0
    assert_speaker_independent(frame)
    assert frame["audio_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


@pytest.mark.shared_data
def test_shared_meld(tmp_path: Path) -> None:
    frame, info, _ = prepare(prepare_meld, _shared("meld"), tmp_path / "out")
    assert info["split_counts"] == {"train": 9989, "valid": 1109, "test": 2610}
    assert set(frame["label"]) == set(MELD_CLASSES) and frame["sample_id"].is_unique
    assert "video_path" not in frame.columns and (frame["text"].str.len() > 0).all()
    assert frame["text"].str.contains("’").any() and not frame["text"].str.contains("â€").any()
