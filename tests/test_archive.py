"""safe_extract: normal archives extract; hostile ones are refused with nothing written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from robustmer.data.archive import Limits, safe_extract
from robustmer.errors import DataError

GOOD = ("good/readme.txt", b"harmless")  # placed before the bad member in every hostile archive


def _tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def _zip(path: Path, entries: list[tuple[str, bytes] | zipfile.ZipInfo]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for entry in entries:
            if isinstance(entry, zipfile.ZipInfo):
                zf.writestr(entry, entry.comment)  # the link target travels in `comment`
                continue
            zf.writestr(zipfile.ZipInfo(entry[0]), entry[1])
    return path


def _zip_symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.comment = target.encode()
    return info


def _assert_nothing_written(tmp_path: Path, target: Path) -> None:
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{target.name}")]
    assert leftovers == []
    assert not (tmp_path / "outside").exists()


HOSTILE_TAR = {
    "absolute": ([("/tmp/robustmer-evil", b"x")], "absolute path"),
    "dotdot": ([("a/../../outside", b"x")], "'..'"),
    "backslash-dotdot": ([("a\\..\\..\\outside", b"x")], "'..'"),
    "symlink-out": ([_link("link", "../outside")], "leaves the target"),
    "symlink-abs": ([_link("link", "/etc")], "absolute path"),
    "symlink-chain": ([_link("x", "."), _link("y", "x/../outside")], "leaves the target"),
    "symlink-loop": ([_link("a", "b"), _link("b", "a")], "loops"),
    "through-symlink": ([_link("d", "good"), ("d/file", b"x")], "through symlink"),
    "hardlink-out": ([_link("h", "../outside", tarfile.LNKTYPE)], "'..' component in its hardlink"),
    "hardlink-abs": ([_link("h", "/etc/passwd", tarfile.LNKTYPE)], "absolute path as its hardlink"),
    "hardlink-missing": ([_link("h", "nothing", tarfile.LNKTYPE)], "not an earlier file"),
    "chardev": ([_special("dev", tarfile.CHRTYPE)], "device"),
    "blockdev": ([_special("dev", tarfile.BLKTYPE)], "device"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "fifo"),
    "link-duplicate": ([("f", b"x"), _link("f", "good/readme.txt")], "more than once"),
}


HOSTILE_ZIP = {
    "absolute": ([("/tmp/robustmer-evil", b"x")], "absolute path"),
    "dotdot": ([("../outside", b"x")], "'..'"),
    "backslash-dotdot": ([("..\\outside", b"x")], "'..'"),
    "drive": ([("C:/outside", b"x")], "drive"),
    "symlink-out": ([_zip_symlink("link", "../../outside")], "leaves the target"),
    "symlink-abs": ([_zip_symlink("link", "/etc/passwd")], "absolute path"),
    "through-symlink": ([_zip_symlink("d", "good"), ("d/file", b"x")], "through symlink"),
}


@pytest.mark.parametrize(
    ("kind", "case"),
    [("tar", c) for c in sorted(HOSTILE_TAR)] + [("zip", c) for c in sorted(HOSTILE_ZIP)],
)
def test_hostile_members_are_refused(tmp_path: Path, kind: str, case: str) -> None:
    entries, reason = (HOSTILE_TAR if kind == "tar" else HOSTILE_ZIP)[case]
    write = _tar if kind == "tar" else _zip
    archive = write(tmp_path / f"corpus.{kind}", [GOOD, *entries])
    target = tmp_path / "target"
    with pytest.raises(DataError, match="nothing was extracted") as err:
        safe_extract(archive, target)
    message = str(err.value)
    assert str(archive) in message and reason in message
    _assert_nothing_written(tmp_path, target)


def test_refused_archive_names_the_offending_member(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [GOOD, _link("evil/link", "../../outside")])
    with pytest.raises(DataError, match="'evil/link'"):
        safe_extract(archive, tmp_path / "target")


@pytest.mark.parametrize(
    ("name", "mode"),
    [("c.tar", "w"), ("c.tgz", "w:gz"), ("c.tar.bz2", "w:bz2"), ("c.tar.xz", "w:xz")],
)
def test_normal_tar_extracts_with_internal_links(tmp_path: Path, name: str, mode: str) -> None:
    folder = tarfile.TarInfo("./corpus/audio")
    folder.type = tarfile.DIRTYPE
    entries: list[tarfile.TarInfo | tuple[str, bytes]] = [
        folder,
        ("./corpus/audio/a.wav", b"RIFF-a"),
        ("corpus/labels.csv", b"id,label\na,happy\n"),
        _link("corpus/latest.csv", "labels.csv"),
        _link("corpus/audio/up.csv", "../labels.csv"),
        _link("corpus/copy.wav", "corpus/audio/a.wav", tarfile.LNKTYPE),
    ]
    archive = _tar(tmp_path / name, entries, mode)
    target = tmp_path / "target"
    files = safe_extract(archive, target)
    assert files == sorted(
        target / p
        for p in (
            "corpus/audio/a.wav",
            "corpus/labels.csv",
            "corpus/latest.csv",
            "corpus/audio/up.csv",
            "corpus/copy.wav",
        )
    )
    assert (target / "corpus/audio/a.wav").read_bytes() == b"RIFF-a"
    assert (target / "corpus/latest.csv").is_symlink()
    assert (target / "corpus/audio/up.csv").read_text() == "id,label\na,happy\n"
    assert (target / "corpus/copy.wav").read_bytes() == b"RIFF-a"
    assert not (target / "corpus/copy.wav").is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".target")] == []


def test_normal_zip_extracts_detected_by_content(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "corpus.tar.gz",  # misleading name: detection is by content
        [
            ("corpus/", b""),
            ("corpus/a.wav", b"RIFF-a"),
            ("corpus\\windows\\b.wav", b"RIFF-b"),
            _zip_symlink("corpus/alias.wav", "a.wav"),
        ],
    )
    target = tmp_path / "target"
    target.mkdir()  # an empty target folder is fine
    files = safe_extract(archive, target)
    assert files == sorted(
        [target / "corpus/a.wav", target / "corpus/windows/b.wav", target / "corpus/alias.wav"]
    )
    assert (target / "corpus/windows/b.wav").read_bytes() == b"RIFF-b"
    assert (target / "corpus/alias.wav").is_symlink()
    assert (target / "corpus/alias.wav").read_bytes() == b"RIFF-a"


def test_non_empty_target_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "c.zip", [GOOD])
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        safe_extract(archive, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "corpus.zip"
    page.write_text("<html>404 Not Found</html>")
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        safe_extract(page, tmp_path / "target")
    with pytest.raises(DataError, match="not found"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "target")


def test_corrupt_archive_leaves_no_partial_tree(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4000
    good = _zip(tmp_path / "good.zip", [("a.bin", payload), ("b.bin", payload)])
    raw = bytearray(good.read_bytes())
    second = raw.rindex(payload[:64])  # flip a byte inside the second member's data
    raw[second + 10] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    target = tmp_path / "target"
    with pytest.raises(DataError, match="may be corrupt"):
        safe_extract(bad, target)
    _assert_nothing_written(tmp_path, target)


# --- limits against zip bombs ---------------------------------------------------------------------


def _bomb(tmp_path: Path, kind: str) -> Path:
    entries: list[tarfile.TarInfo | tuple[str, bytes]] = [
        ("a.bin", b"x" * 600),
        ("b.bin", b"y" * 600),
        ("c.bin", b"z" * 600),
    ]
    if kind == "tar":
        return _tar(tmp_path / "bomb.tar.gz", entries, "w:gz")
    return _zip(tmp_path / "bomb.zip", entries)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_too_many_members_are_refused_before_writing(tmp_path: Path, kind: str) -> None:
    archive = _bomb(tmp_path, kind)
    target = tmp_path / "target"
    limits = Limits(max_members=2, params_key="acquire.emodb")
    with pytest.raises(DataError, match="over the limit of 2") as err:
        safe_extract(archive, target, limits)
    message = str(err.value)
    assert str(archive) in message and "members" in message
    assert "acquire.emodb.max_archive_members" in message and "nothing was extracted" in message
    _assert_nothing_written(tmp_path, target)


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_too_many_unpacked_bytes_are_refused_before_writing(tmp_path: Path, kind: str) -> None:
    archive = _bomb(tmp_path, kind)
    target = tmp_path / "target"
    with pytest.raises(DataError, match=r"1,800 unpacked bytes, over the limit of 1,000 \(") as err:
        safe_extract(archive, target, Limits(max_bytes=1000))
    assert str(archive) in str(err.value) and "max_unpacked_bytes" in str(err.value)
    _assert_nothing_written(tmp_path, target)
    assert len(safe_extract(archive, target, Limits(max_members=3, max_bytes=1800))) == 3


def _understate_size(path: Path, name: bytes, declared: int) -> None:
    """Rewrite both headers of the member `name` so they declare `declared` unpacked bytes."""
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = raw.index(signature)
        while name not in raw[start : start + 80]:
            start = raw.index(signature, start + 4)
        raw[start + offset : start + offset + 4] = declared.to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def test_zip_member_longer_than_its_header_stops_the_extraction(tmp_path: Path) -> None:
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.txt", b"fine")
        zf.writestr("big.bin", b"\0" * 100_000)
    _understate_size(archive, b"big.bin", 10)
    target = tmp_path / "target"
    with pytest.raises(DataError, match=r"member 'big\.bin' fails its check") as err:
        safe_extract(archive, target)
    assert str(archive) in str(err.value) and "declares 10 bytes" in str(err.value)
    _assert_nothing_written(tmp_path, target)


def test_zip_writing_guard_counts_what_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the zip reader does with a lying header, more bytes than declared stop it."""
    archive = _zip(tmp_path / "c.zip", [("a.bin", b"1234")])
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info: io.BytesIO(b"x" * 5000))
    target = tmp_path / "target"
    with pytest.raises(DataError, match=r"'a\.bin' yields more than 4 bytes") as err:
        safe_extract(archive, target)
    assert "its header declares 4 bytes" in str(err.value)
    _assert_nothing_written(tmp_path, target)
