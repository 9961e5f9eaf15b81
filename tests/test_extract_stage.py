"""The `extract` stage: per-item cache, resume, bad media, parallel workers, several extractors.

Most tests use small fake extractors (registered through the registry's test hook) that log
every item they extract to a file, so "what did this run extract" is counted exactly, also
across worker processes. The last tests run the real extractors on a tiny built-in corpus.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from robustmer.config import ModelSpec, validate_params
from robustmer.data.store import FeatureStore
from robustmer.errors import ConfigError, DataError, ValidationFailed
from robustmer.features.base import Extractor, ItemError, MediaError, OutputSpec, parallel_map
from robustmer.features.cache import MediaIndex
from robustmer.features.extract import extract, modality_items, read_placeholders
from robustmer.features.registry import build_extractors, registered
from robustmer.io import sha256_file, write_json

N = 8


class FakeAudio(Extractor):
    """Deterministic features of a file's bytes; b"BAD" files raise, empty files too."""

    modality = "audio"
    kind = "fake_audio"
    defaults: ClassVar[dict[str, Any]] = {"scale": 1.0}
    suffixes: ClassVar[tuple[str, ...]] = ("_utt", "_seq")

    def setup(self) -> None:
        _log(f"setup {self.name}")
        self._done = 0

    def version(self) -> str:
        return "fake 1"

    def outputs(self) -> list[OutputSpec]:
        specs = {
            "_utt": OutputSpec("_utt", "utterance", 3, feature_names=["n", "sum", "scale"]),
            "_seq": OutputSpec("_seq", "frame", 2, frame_rate=10.0),
            "": OutputSpec("", "utterance", 3),
        }
        return [specs[s] for s in self.suffixes]

    def extract(self, items: Sequence[Path]) -> list[dict[str, np.ndarray]]:
        out = []
        for path in items:
            if self._done == int(os.environ.get("FAKE_CRASH_AFTER", "-1")):
                raise KeyboardInterrupt  # a Ctrl-C in the middle of the run
            self._done += 1
            _log(f"{self.name} {Path(path).name}")
            data = Path(path).read_bytes()
            if not data:
                raise MediaError(str(path), "file is empty (0 bytes)")
            if data.startswith(b"BAD"):
                raise MediaError(str(path), "cannot decode")
            utt = np.array([[len(data), sum(data) % 997, self.cfg["scale"]]], np.float32)
            seq = np.arange(2 * (1 + len(data) % 4), dtype=np.float32).reshape(-1, 2) + data[0]
            full = {"_utt": utt, "_seq": seq * self.cfg["scale"], "": utt}
            out.append({s: full[s] for s in self.suffixes})
        return out


class FakeSingle(FakeAudio):
    kind = "fake_single"
    suffixes = ("",)


class FakeText(Extractor):
    """Batched text features; empty transcripts are zeros (not errors)."""

    modality = "text"
    kind = "fake_text"
    defaults: ClassVar[dict[str, Any]] = {"batch_size": 3}

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        self.batch_size = self.cfg["batch_size"]

    def version(self) -> str:
        return "fake text 1"

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("", "utterance", 2)]

    def extract(self, items: Sequence[str]) -> list[dict[str, np.ndarray]]:
        _log(f"{self.name} batch {len(items)}")
        return [
            {"": np.array([[len(t), t.count(" ")]], np.float32) if t.strip() else np.zeros((1, 2))}
            for t in items
        ]


def _log(line: str) -> None:
    with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def calls(log: Path, since: int = 0) -> list[str]:
    """Items extracted (not setups) after line `since` of the log."""
    lines = log.read_text().splitlines()[since:] if log.is_file() else []
    return [line for line in lines if not line.startswith("setup ")]


def n_lines(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.is_file() else 0


@pytest.fixture
def fake_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("ROBUSTMER_FEATURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBUSTMER_NO_PROGRESS", "1")
    monkeypatch.delenv("FAKE_CRASH_AFTER", raising=False)
    with (
        registered("fake_audio", FakeAudio),
        registered("fake_single", FakeSingle),
        registered("fake_text", FakeText),
    ):
        yield log


def make_corpus(root: Path, n: int = N, media: str = "audio_path") -> Path:
    """A raw corpus of `n` small binary 'media' files: 2 speakers/folds, 2 classes."""
    raw = root / "raw"
    (raw / "media").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        rel = f"media/u{i:02d}.bin"
        (raw / rel).write_bytes(bytes(rng.integers(1, 255, 5 + i, dtype=np.uint8)))
        rows.append(
            {
                "sample_id": f"u{i:02d}",
                "speaker": f"s{i % 2}",
                "label": ["calm", "happy"][(i // 2) % 2],
                "fold": i % 2,
                "text": f"utterance number {i}" if i != 3 else "",
                media: rel,
            }
        )
    pd.DataFrame(rows).to_csv(raw / "metadata.csv", index=False)
    write_json(raw / "corpus.json", {"dataset": "builtin", "classes": ["calm", "happy"]})
    return raw


def add_row(raw: Path, sample_id: str, data: bytes) -> None:
    frame = pd.read_csv(raw / "metadata.csv", keep_default_na=False)
    rel = f"media/{sample_id}.bin"
    (raw / rel).write_bytes(data)
    row = {**frame.iloc[0].to_dict(), "sample_id": sample_id, "audio_path": rel}
    pd.concat([frame, pd.DataFrame([row])]).to_csv(raw / "metadata.csv", index=False)


def make_params(
    audio: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    validate: dict[str, Any] | None = None,
    **extract_cfg: Any,
) -> dict[str, Any]:
    params = validate_params(
        {
            "seed": 1,
            "dataset": "builtin",
            "device": "cpu",
            "extract": {"workers": 1, **extract_cfg},
            "validate": validate or {},
            "models": {"m": {"arch": "early_fusion", "features": {"audio": "a_utt"}}},
        }
    )
    # Fake kinds are not in the schema's enum: put them in after validation.
    params["extract"].update(
        audio=audio if audio is not None else {"a": {"kind": "fake_audio"}},
        text=text or {},
        video={},
    )
    return params


def arrays(store_dir: Path) -> dict[str, np.ndarray]:
    store = FeatureStore(store_dir)
    return {n: np.asarray(store.values(n)) for n in store.feature_names()}


def test_rerun_extracts_nothing_and_gives_the_same_store(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path)
    params = make_params(text={"t": {"kind": "fake_text"}})
    extract(params, raw, tmp_path / "f1")
    assert len(calls(fake_log)) == N + 3  # N files, ceil(N / 3) text batches
    before = n_lines(fake_log)
    extract(params, raw, tmp_path / "f2")
    assert n_lines(fake_log) == before  # no item extracted, no extractor even set up
    first, second = FeatureStore(tmp_path / "f1"), FeatureStore(tmp_path / "f2")
    assert first.info["features"] == second.info["features"]
    assert first.meta("audio/a_seq") == second.meta("audio/a_seq")
    assert read_placeholders(tmp_path / "f1").empty
    text = first.utterance_matrix("text/t")
    assert not text[3].any() and text[2].all()  # an empty transcript is zeros, not an error


def test_adding_one_file_extracts_only_that_file(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path)
    params = make_params()
    extract(params, raw, tmp_path / "f")
    add_row(raw, "u99", b"a brand new file")
    since = n_lines(fake_log)
    extract(params, raw, tmp_path / "f")
    assert calls(fake_log, since) == ["a u99.bin"]
    assert len(FeatureStore(tmp_path / "f")) == N + 1


def test_interrupted_run_resumes_with_the_rest(
    fake_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = make_corpus(tmp_path)
    params = make_params()
    monkeypatch.setenv("FAKE_CRASH_AFTER", "3")
    with pytest.raises(KeyboardInterrupt):
        extract(params, raw, tmp_path / "f")
    assert not (tmp_path / "f").exists()
    monkeypatch.delenv("FAKE_CRASH_AFTER")
    since = n_lines(fake_log)
    extract(params, raw, tmp_path / "f")
    assert sorted(calls(fake_log, since)) == [f"a u{i:02d}.bin" for i in range(3, N)]
    monkeypatch.setenv("ROBUSTMER_FEATURE_CACHE", str(tmp_path / "fresh-cache"))
    extract(params, raw, tmp_path / "cold")
    assert (
        FeatureStore(tmp_path / "f").info["features"]
        == (FeatureStore(tmp_path / "cold").info["features"])
    )


def test_changing_an_option_invalidates_only_that_entry(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path)
    both = {"a": {"kind": "fake_audio"}, "b": {"kind": "fake_audio"}}
    extract(make_params(both), raw, tmp_path / "f0")
    since = n_lines(fake_log)
    changed = {"a": {"kind": "fake_audio"}, "b": {"kind": "fake_audio", "scale": 2.0}}
    extract(make_params(changed), raw, tmp_path / "f")
    assert {c.split()[0] for c in calls(fake_log, since)} == {"b"}
    assert len(calls(fake_log, since)) == N
    # Renaming an entry keeps its cache: the key is the extractor's configuration, not its name.
    since = n_lines(fake_log)
    extract(make_params({"renamed": {"kind": "fake_audio"}}), raw, tmp_path / "g")
    assert calls(fake_log, since) == []


def test_corrupt_cache_entry_is_a_miss(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path)
    params = make_params()
    extract(params, raw, tmp_path / "f1")
    entries = sorted((tmp_path / "cache" / "audio").rglob("*.npz"))
    assert len(entries) == N
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # cut short
    entries[1].write_bytes(b"not a zip at all")
    since = n_lines(fake_log)
    extract(params, raw, tmp_path / "f2")
    assert len(calls(fake_log, since)) == 2
    for name, values in arrays(tmp_path / "f1").items():
        np.testing.assert_array_equal(values, arrays(tmp_path / "f2")[name])
    since = n_lines(fake_log)
    extract(params, raw, tmp_path / "f3")  # the rewritten entries are good again
    assert calls(fake_log, since) == []


def test_fail_lists_every_bad_file_and_keeps_the_previous_store(
    fake_log: Path, tmp_path: Path
) -> None:
    raw = make_corpus(tmp_path)
    params = make_params()
    extract(params, raw, tmp_path / "f")
    previous = FeatureStore(tmp_path / "f").content_hash()
    (raw / "media" / "u02.bin").write_bytes(b"")
    (raw / "media" / "u05.bin").write_bytes(b"BAD bytes")
    (raw / "media" / "u06.bin").write_bytes(b"good, but new")
    since = n_lines(fake_log)
    with pytest.raises(DataError) as info:
        extract(params, raw, tmp_path / "f")
    message = str(info.value)
    assert "2 item(s)" in message and "extract.on_error: placeholder" in message
    assert "u02.bin" in message and "empty" in message
    assert "u05.bin" in message and "cannot decode" in message
    assert FeatureStore(tmp_path / "f").content_hash() == previous
    assert len(calls(fake_log, since)) == 3
    # The good new file was cached before the failure; only the fixed files run again.
    (raw / "media" / "u02.bin").write_bytes(b"fixed")
    (raw / "media" / "u05.bin").write_bytes(b"fixed too")
    since = n_lines(fake_log)
    extract(params, raw, tmp_path / "f")
    assert sorted(calls(fake_log, since)) == ["a u02.bin", "a u05.bin"]


def test_placeholders_are_recorded_zeros_and_the_gate_caps_them(
    fake_log: Path, tmp_path: Path
) -> None:
    from robustmer.validation.gate import run_gate

    raw = make_corpus(tmp_path)
    (raw / "media" / "u05.bin").write_bytes(b"BAD bytes")
    params = make_params(on_error="placeholder", validate={"max_placeholder_fraction": 0.05})
    store_dir = tmp_path / "f"
    extract(params, raw, store_dir)
    store = FeatureStore(store_dir)
    for name in ("audio/a_utt", "audio/a_seq"):
        seq = store.sequence(name, 5)
        assert seq.shape == (1, store.meta(name).dim) and not seq.any()
        assert store.meta(name).params["n_placeholders"] == 1
    record = read_placeholders(store_dir)
    assert sorted(record["feature"]) == ["audio/a_seq", "audio/a_utt"]
    assert set(record["sample_id"]) == {"u05"} and "cannot decode" in record["reason"].iloc[0]

    out = tmp_path / "validation"
    with pytest.raises(ValidationFailed, match="max_placeholder_fraction"):
        run_gate(params, store_dir, out / "summary.json", out / "docs")  # 1/8 > 0.05
    params["validate"]["max_placeholder_fraction"] = 0.2
    run_gate(params, store_dir, out / "summary.json", out / "docs")

    # An unrecorded placeholder (the record lost) fails the gate too.
    (store_dir / "placeholders.parquet").unlink()
    with pytest.raises(ValidationFailed, match=r"placeholders\.parquet"):
        run_gate(params, store_dir, out / "summary.json", out / "docs")

    # Placeholders are not cached: once the file is fixed, the next run extracts it.
    (raw / "media" / "u05.bin").write_bytes(b"fixed")
    since = n_lines(fake_log)
    extract(params, raw, store_dir)
    assert calls(fake_log, since) == ["a u05.bin"]
    assert read_placeholders(store_dir).empty


def test_two_workers_give_the_same_arrays_as_one(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path, n=12)
    text = {"t": {"kind": "fake_text"}}
    extract(make_params(text=text, workers=2), raw, tmp_path / "two")
    assert len(calls(fake_log)) == 12 + 4
    assert sum(line == "setup a" for line in fake_log.read_text().splitlines()) == 2  # per worker
    shutil.rmtree(tmp_path / "cache")
    extract(make_params(text=text, workers=1), raw, tmp_path / "one")
    one, two = arrays(tmp_path / "one"), arrays(tmp_path / "two")
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])


def test_two_workers_whatever_order_their_batches_come_back_in(
    fake_log: Path, tmp_path: Path
) -> None:
    """A pool may hand back finished batches in any order (`as_completed` yields those done
    before it looked as a set): a worker's second batch read before its first still stores."""
    from concurrent.futures import wait

    from robustmer.features import base

    def last_first(futures: Any) -> Iterator[Any]:
        wait(list(futures))
        return iter(sorted(futures, key=futures.get, reverse=True))

    raw = make_corpus(tmp_path, n=12)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "as_completed", last_first)
        extract(make_params(workers=2), raw, tmp_path / "reversed")
    shutil.rmtree(tmp_path / "cache")
    extract(make_params(workers=1), raw, tmp_path / "one")
    one, reversed_ = arrays(tmp_path / "one"), arrays(tmp_path / "reversed")
    assert one.keys() == reversed_.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], reversed_[name])


def test_several_extractors_per_modality_selected_by_name(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path)
    audio = {"a": {"kind": "fake_audio"}, "b": {"kind": "fake_audio", "scale": 3.0}}
    extract(make_params(audio, text={"t": {"kind": "fake_text"}}), raw, tmp_path / "f")
    store = FeatureStore(tmp_path / "f")
    assert store.feature_names() == [
        "audio/a_seq",
        "audio/a_utt",
        "audio/b_seq",
        "audio/b_utt",
        "text/t",
    ]
    meta = store.meta("audio/b_utt")
    assert (meta.level, meta.dim, meta.feature_names) == ("utterance", 3, ["n", "sum", "scale"])
    assert meta.params["kind"] == "fake_audio" and meta.params["entry"] == "b"
    assert meta.params["scale"] == 3.0 and meta.version == "fake 1"
    seq = store.meta("audio/b_seq")
    assert (seq.level, seq.dim, seq.frame_rate) == ("frame", 2, 10.0)
    np.testing.assert_array_equal(store.utterance_matrix("audio/b_utt")[:, 2], 3.0)
    # A model picks one of them by its store name.
    params = validate_params(
        {
            "seed": 1,
            "dataset": "builtin",
            "models": {"m": {"arch": "early_fusion", "features": {"audio": "b_utt", "text": "t"}}},
        }
    )
    spec = ModelSpec.from_params(params, "m")
    assert {f"{m}/{n}" for m, n in spec.features.items()} <= set(store.feature_names())


def test_config_errors_name_the_entry(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path)
    clash = {"x": {"kind": "fake_audio"}, "x_utt": {"kind": "fake_single"}}
    with pytest.raises(ConfigError, match=r"extract.audio.x_utt and extract.audio.x"):
        extract(make_params(clash), raw, tmp_path / "f")
    with pytest.raises(ConfigError, match=r"extract.audio.a: .*unknown option.*'scael'"):
        build_extractors({"audio": {"a": {"kind": "fake_audio", "scael": 2}}}, "audio")
    with pytest.raises(ConfigError, match=r"extract.audio.a: kind 'fake_text' extracts text"):
        build_extractors({"audio": {"a": {"kind": "fake_text"}}}, "audio")
    with pytest.raises(ConfigError, match=r"extract.video.v: unknown extractor kind 'nope'"):
        build_extractors({"video": {"v": {"kind": "nope"}}}, "video")
    bad_schema = {"seed": 1, "dataset": "builtin", "extract": {"audio": {"a": {"kind": "nope"}}}}
    with pytest.raises(ConfigError, match=r"extract\.audio\.a\.kind"):
        validate_params({**bad_schema, "models": {"m": {"arch": "early_fusion", "features": {}}}})


def test_audio_comes_from_video_when_there_is_no_audio_path(fake_log: Path, tmp_path: Path) -> None:
    raw = make_corpus(tmp_path, media="video_path")
    frame = pd.read_csv(raw / "metadata.csv", keep_default_na=False)
    cfg = make_params()["extract"]
    assert modality_items(raw, frame, cfg)["audio"] == [raw / p for p in frame["video_path"]]
    assert "audio" not in modality_items(raw, frame, {**cfg, "audio_from_video": False})
    extract(make_params(), raw, tmp_path / "f")
    assert len(FeatureStore(tmp_path / "f").sequences("audio/a_utt")) == N


def test_recorded_hashes_are_used_until_the_file_changes(tmp_path: Path) -> None:
    media = tmp_path / "clip.bin"
    media.write_bytes(b"some media")
    record_time = media.stat().st_mtime_ns + 10**9
    recorded = {media.absolute().as_posix(): ("f" * 64, record_time)}
    index = MediaIndex(tmp_path / "cache")
    assert index.hashes([media], recorded) == ["f" * 64]  # trusted: not modified since
    index.save()
    assert MediaIndex(tmp_path / "cache").hashes([media]) == ["f" * 64]  # remembered by stat
    media.write_bytes(b"replaced media")
    os.utime(media, ns=(record_time + 10**9, record_time + 10**9))
    assert MediaIndex(tmp_path / "cache").hashes([media], recorded) == [sha256_file(media)]


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise MediaError(f"item{x}", "broken")
    return x * 10


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_returns_item_errors_as_values(workers: int) -> None:
    seen: list[int] = []
    out = parallel_map(
        _fail_on_three,
        list(range(6)),
        workers,
        "test",
        errors=(MediaError,),
        on_result=lambda i, _: seen.append(i),
    )
    assert out[:3] == [0, 10, 20] and out[4:] == [40, 50]
    assert out[3] == ItemError("item3", "broken")
    assert sorted(seen) == list(range(6))


def _crash_on_five(batch: list[str]) -> list[str]:
    if batch == ["clip5.mp4"]:
        time.sleep(0.3)  # the results of the earlier clips reach the parent first
        os._exit(3)  # a segfault in a decoder, or the OOM killer
    return batch


def test_a_crashed_worker_is_named(tmp_path: Path) -> None:
    seen: list[int] = []
    items = [[f"clip{i}.mp4"] for i in range(12)]
    with pytest.raises(DataError, match=r"worker process died .*clip5\.mp4"):
        parallel_map(_crash_on_five, items, 2, "crash", on_result=lambda i, _: seen.append(i))
    assert 5 not in seen and set(range(5)) <= set(seen)  # what finished before was delivered


# ---------------------------------------------------------------------------------------------
# Real extractors on a tiny built-in corpus.


@pytest.fixture(scope="module")
def builtin_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from robustmer.data.builtin import generate_corpus

    params = validate_params(
        {
            "seed": 3,
            "dataset": "builtin",
            "acquire": {"builtin": {"n_speakers": 2, "utterances_per_speaker": 4, "n_folds": 2}},
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
        }
    )
    out = tmp_path_factory.mktemp("builtin") / "raw"
    generate_corpus(out, params["acquire"]["builtin"], seed=5, workers=1)
    return out


def test_real_extractors_cache_and_placeholders(
    builtin_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("ROBUSTMER_FEATURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBUSTMER_NO_PROGRESS", "1")
    params = validate_params(
        {
            "seed": 3,
            "dataset": "builtin",
            "device": "cpu",
            "extract": {"workers": 2},
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
        }
    )
    extract(params, builtin_raw, tmp_path / "f1")
    store = FeatureStore(tmp_path / "f1")
    expected = {
        "audio/egemaps_functionals": 88,
        "audio/egemaps_lld": 25,
        "text/minilm": 384,
        "video/face_hog": 324,
        "video/face_hog_mean": 324,
    }
    assert {n: store.meta(n).dim for n in store.feature_names()} == expected
    assert store.meta("video/face_hog").frame_rate == 12.0
    assert store.meta("video/face_hog").params["stats"]["face_found_rate"] > 0.5

    caplog.set_level("INFO", logger="robustmer.features.extract")
    extract(params, builtin_raw, tmp_path / "f2")
    assert caplog.text.count("0 to extract") == 3
    assert FeatureStore(tmp_path / "f2").info["features"] == store.info["features"]
    assert FeatureStore(tmp_path / "f2").meta("video/face_hog") == store.meta("video/face_hog")

    # Bad media of every kind, stored as recorded placeholders; the rest comes from the cache.
    bad = tmp_path / "bad"
    shutil.copytree(builtin_raw, bad)
    frame = pd.read_csv(bad / "metadata.csv", keep_default_na=False)
    wav, mp4 = bad / frame["audio_path"][1], bad / frame["video_path"][2]
    wav.write_bytes(wav.read_bytes()[:2000])  # truncated
    mp4.write_bytes(b"")  # zero-length
    frame.loc[4, "text"] = ""  # an empty transcript is zeros, not an error
    frame.to_csv(bad / "metadata.csv", index=False)
    caplog.clear()
    extract({**params, "extract": {**params["extract"], "on_error": "placeholder"}}, bad, bad / "f")
    record = read_placeholders(bad / "f")
    ids = frame["sample_id"].astype(str)
    assert sorted(zip(record["sample_id"], record["feature"], strict=True)) == [
        (ids[1], "audio/egemaps_functionals"),
        (ids[1], "audio/egemaps_lld"),
        (ids[2], "video/face_hog"),
        (ids[2], "video/face_hog_mean"),
    ]
    assert "truncated wav" in " ".join(record["reason"]) and "empty" in " ".join(record["reason"])
    assert caplog.text.count(" 1 to extract") == 3  # the two bad files and the new transcript
    text = FeatureStore(bad / "f").utterance_matrix("text/minilm")
    assert not text[4].any() and text[5].any()
