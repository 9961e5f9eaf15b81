"""Downloaded datasets: the archive and its unpacked copy are keyed by content, so a changed URL
or sha256 never reuses a stale copy, and the extraction limits reach the archive code."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from dataset_fixtures_raw import EMODB_SPEAKERS, build_emodb

from robustmer.data import acquire as acquire_mod
from robustmer.data.acquire import acquire, download_dataset
from robustmer.data.registry import dataset_info
from robustmer.errors import DataError
from robustmer.io import read_json


@pytest.fixture(autouse=True)
def _downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ROBUSTMER_NO_PROGRESS", "1")
    folder = tmp_path / "downloads"
    monkeypatch.setattr(acquire_mod, "DOWNLOADS", folder)
    return folder


def _zip_of(path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """A zip named `path` holding `files`, and its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_changed_url_and_sha_unpack_the_new_archive(tmp_path: Path) -> None:
    # Same file name on both servers: only the URL and the digest differ.
    old, old_sha = _zip_of(tmp_path / "mirror_a" / "corpus.zip", {"corpus/v.txt": b"old"})
    new, new_sha = _zip_of(tmp_path / "mirror_b" / "corpus.zip", {"corpus/v.txt": b"new"})
    info = dataset_info("emodb")
    first = download_dataset(info, {"url": old.as_uri(), "sha256": old_sha})
    assert (first / "corpus" / "v.txt").read_bytes() == b"old"
    second = download_dataset(info, {"url": new.as_uri(), "sha256": new_sha})
    assert (second / "corpus" / "v.txt").read_bytes() == b"new"
    assert second != first and second.name == new_sha
    old.unlink()  # an unchanged URL and digest reuse both copies without reading the source
    assert download_dataset(info, {"url": old.as_uri(), "sha256": old_sha.upper()}) == first


def test_changed_unverified_url_is_downloaded_again(tmp_path: Path) -> None:
    old, _ = _zip_of(tmp_path / "a" / "corpus.zip", {"v.txt": b"old"})
    new, new_sha = _zip_of(tmp_path / "b" / "corpus.zip", {"v.txt": b"new"})
    info = dataset_info("emodb")
    first = download_dataset(info, {"url": old.as_uri(), "allow_unverified": True})
    assert (first / "v.txt").read_bytes() == b"old"
    second = download_dataset(info, {"url": new.as_uri(), "allow_unverified": True})
    assert (second / "v.txt").read_bytes() == b"new" and second.name == new_sha


def _emodb_zip(tmp_path: Path, name: str, speakers: tuple[str, ...]) -> tuple[Path, str]:
    wav_dir = build_emodb(tmp_path / f"{name}_src", speakers)
    files = {f"wav/{p.name}": p.read_bytes() for p in sorted(wav_dir.iterdir())}
    return _zip_of(tmp_path / name / "download.zip", files)


def test_acquire_lands_the_new_archive_and_limits_reach_extraction(tmp_path: Path) -> None:
    out = tmp_path / "raw" / "emodb"
    speakers = tuple(EMODB_SPEAKERS)
    full, full_sha = _emodb_zip(tmp_path, "full", speakers)
    fewer, fewer_sha = _emodb_zip(tmp_path, "fewer", speakers[:-1])

    def run(url: Path, sha: str, **extra: object) -> dict:
        cfg = {"download": True, "url": url.as_uri(), "sha256": sha, **extra}
        acquire({"dataset": "emodb", "acquire": {"emodb": cfg}}, out)
        return read_json(out / "corpus.json")

    assert run(full, full_sha)["n_speakers"] == len(speakers)
    with pytest.raises(DataError, match=r"acquire\.emodb\.max_archive_members") as err:
        run(fewer, fewer_sha, max_archive_members=3)
    assert str(fewer.name) in str(err.value)
    assert read_json(out / "corpus.json")["n_speakers"] == len(speakers)  # the old copy stays
    corpus = run(fewer, fewer_sha, max_unpacked_bytes=10**9)
    assert corpus["n_speakers"] == len(speakers) - 1
    assert fewer_sha in corpus["source"]
