"""Raw audio noise mixed in memory (corruption/noisy_audio.py) is the 16-bit file it replaced:
the same samples for every noise kind, the same features through the extraction workers, and
clear errors; no scratch file is needed."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustmer.corruption import raw_noise
from robustmer.corruption.noisy_audio import BABBLE_TALKERS, noisy_audio
from robustmer.errors import DataError
from robustmer.features.extract import extract_modality
from robustmer.features.media import read_audio

RATE = 16000


def test_pcm16_in_memory_is_a_wav_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    on_grid = rng.integers(-32768, 32768, 20000) / 32768  # exact steps and values a hair off them
    x = np.concatenate([
        rng.uniform(-1, 1, 50000), on_grid + rng.choice([-3e-7, -1e-9, 0, 1e-9, 3e-7], 20000),
        [1.0, -1.0, 32767 / 32768, 1.5, -1.5, 0.5 / 32768, -0.5 / 32768],
    ]).astype(np.float32)  # fmt: skip
    raw_noise.write_audio(tmp_path / "x.wav", x, RATE)
    back, _ = read_audio(tmp_path / "x.wav")
    assert np.array_equal(raw_noise.as_pcm16(x), back)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray, Path]:
    """Six utterances of three speakers (random tones in noise), and a two-file noise folder."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        n = int(RATE * rng.uniform(0.6, 1.2))
        t = np.arange(n) / RATE
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.02 * rng.standard_normal(n)
        paths.append(root / f"u{i}.wav")
        sf.write(paths[-1], x.astype(np.float32), RATE, subtype="PCM_16")
    folder = root / "noise"
    folder.mkdir()
    for i in range(2):
        sf.write(folder / f"n{i}.wav", 0.1 * rng.standard_normal(RATE // 2), RATE)
    return paths, np.array(["a", "a", "b", "b", "c", "c"]), folder


def file_mix(paths: list[Path], speakers: np.ndarray, i: int, kind: str, snr: float, seed: int,
             folder: Path, scratch: Path) -> np.ndarray:  # fmt: skip
    """How the condition made a noisy utterance before: mix, write a 16-bit WAV, read it."""
    clean = [read_audio(p) for p in paths]
    signal = clean[i][0]
    draw = np.random.default_rng(seed)
    if kind == "white":
        noise = raw_noise.white_noise(len(signal), draw)
    elif kind == "pink":
        noise = raw_noise.pink_noise(len(signal), draw)
    elif kind == "babble":
        others = np.flatnonzero(speakers != speakers[i])
        chosen = draw.choice(others, size=min(2 * BABBLE_TALKERS, len(others)), replace=False)
        noise = raw_noise.babble_noise([clean[j][0] for j in chosen], len(signal), draw,
                                       BABBLE_TALKERS)  # fmt: skip
    else:
        noise = raw_noise.fit_noise_length(raw_noise.load_noise_folder(folder, RATE), len(signal),
                                           draw)  # fmt: skip
    mixed, _ = raw_noise.mix_at_snr(signal, noise, snr)
    raw_noise.write_audio(scratch / f"{kind}_{i}.wav", mixed, RATE)
    return read_audio(scratch / f"{kind}_{i}.wav")[0]


@pytest.mark.parametrize("kind", ["white", "pink", "babble", "folder"])
def test_a_noisy_item_is_the_file_the_condition_wrote(
    kind: str, corpus: tuple[list[Path], np.ndarray, Path], tmp_path: Path
) -> None:
    paths, speakers, folder = corpus
    for i, snr in [(0, 10.0), (3, 0.0), (5, -5.0)]:
        item = noisy_audio(paths, speakers, i, kind, snr, 1000 + i, folder)
        got, rate = pickle.loads(pickle.dumps(item)).read()  # as an extraction worker gets it
        assert rate == RATE
        assert np.array_equal(got, file_mix(paths, speakers, i, kind, snr, 1000 + i, folder,
                                            tmp_path))  # fmt: skip
        assert str(paths[i]) in str(item) and kind in str(item)


def test_the_extraction_workers_read_noisy_items_as_files(
    corpus: tuple[list[Path], np.ndarray, Path], tmp_path: Path
) -> None:
    paths, speakers, folder = corpus
    items = [noisy_audio(paths, speakers, i, "babble", 5.0, i, folder) for i in range(6)]
    files = []
    for i, item in enumerate(items):
        files.append(tmp_path / f"{i}.wav")
        raw_noise.write_audio(files[-1], item.read()[0], RATE)
    cfg = {"audio": {"egemaps": {"kind": "opensmile", "feature_set": "eGeMAPSv02"}}}
    ids = [f"s{i}" for i in range(6)]
    in_memory = extract_modality("audio", items, cfg, sample_ids=ids, workers=2)
    from_files = extract_modality("audio", files, cfg, sample_ids=ids, workers=1)
    assert not in_memory.bad
    for a, b in zip(in_memory.features, from_files.features, strict=True):
        assert a.meta.name == b.meta.name
        assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences, strict=True))


def test_babble_talkers_at_another_rate_are_refused(tmp_path: Path) -> None:
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    sf.write(paths[0], np.full(RATE, 0.1, np.float32), RATE)
    sf.write(paths[1], np.full(8000, 0.1, np.float32), 8000)
    item = noisy_audio(paths, np.array(["x", "y"]), 0, "babble", 5.0, 3)
    with pytest.raises(DataError, match=r"a\.wav: babble talkers have sample rates \[8000\]"):
        item.read()
