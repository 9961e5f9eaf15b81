"""Extract downloaded corpus archives without letting a hostile member write outside the target.

Archives come from third-party servers. A member named `/etc/x` or `../../x`, a symlink or hardlink
pointing out of the tree, or a device node could overwrite the user's files, so every member is
checked before anything is written. A zip bomb (a few kB that unpack to terabytes or to millions of
entries) would fill the disk, so the member count and the total unpacked size declared in the
headers are checked against limits first, and zip members are counted again while they are written
(their headers can lie). Extraction goes to a temporary sibling folder that is renamed into place
at the end, so a failure mid-way leaves no partial tree.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from robustmer.errors import DataError
from robustmer.io import atomic_dir

# Defaults far above any emotion corpus (MSP-Podcast unpacks to about 100 GB in some 300,000
# files; MELD.Raw to about 10 GB) yet far below what a bomb declares.
MAX_MEMBERS = 1_000_000
MAX_UNPACKED_BYTES = 1 << 40  # 1 TiB
_MAX_SYMLINK_DEPTH = 40  # the same bound Linux puts on nested symlink resolution
_MAX_ZIP_LINK_BYTES = 4096  # a zip symlink's target is stored as its content
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass(frozen=True)
class _Member:
    """One archive entry reduced to what the safety checks need."""

    name: str  # as stored in the archive, for messages
    parts: tuple[str, ...]  # normalised path components below the target
    kind: str  # "file" | "dir" | "symlink" | "hardlink"
    link: str | None = None  # symlink target (relative to its folder) or hardlink target (root)
    size: int = 0  # unpacked bytes the header declares (regular files only)


@dataclass(frozen=True)
class Limits:
    """How much one archive may unpack to; `params_key` names where the user raises them."""

    max_members: int = MAX_MEMBERS
    max_bytes: int = MAX_UNPACKED_BYTES
    params_key: str = "acquire.<dataset>"


def safe_extract(archive: Path, target: Path, limits: Limits | None = None) -> list[Path]:
    """Extract a zip or tar (optionally gz/bz2/xz) `archive` into `target`; return its files.

    The format is detected from the content, not the name. Every member is validated first; any
    that would escape `target` (absolute path, drive, `..`, escaping symlink or hardlink, writing
    through a symlink) or that is a device or fifo refuses the whole archive with nothing written,
    and so does an archive with more members or more declared unpacked bytes than `limits`.
    `target` must not exist or be an empty folder.
    """
    archive, target = Path(archive), Path(target)
    limits = limits or Limits()
    if not archive.is_file():
        raise DataError(f"archive {archive} not found; download it first")
    _check_target(target, archive)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, target, limits)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, target, limits)
    raise DataError(
        f"{archive} is neither a zip nor a tar archive (optionally gz/bz2/xz compressed); it may "
        "be truncated or an HTML error page: delete it and download it again"
    )


def _check_target(target: Path, archive: Path) -> None:
    if target.exists() and not target.is_dir():
        raise DataError(f"cannot extract {archive}: {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        raise DataError(
            f"cannot extract {archive}: {target} already exists and is not empty; remove it to "
            "extract again"
        )


# --- tar ----------------------------------------------------------------------------------------


def _extract_tar(archive: Path, target: Path, limits: Limits) -> list[Path]:
    """Tar members are written with exactly the size their header gives, so the header check
    bounds the unpacked bytes (a compressed tar's stream cannot make a member longer)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            infos = _tar_infos(tar, archive, limits)
            members = [_tar_member(info, archive) for info in infos]
            _validate(members, archive)
            _check_limits(members, archive, limits)
            chosen = []
            for info, member in zip(infos, members, strict=True):
                if not member.parts:  # the archive's own root folder ("./")
                    continue
                info.name = "/".join(member.parts)
                if member.link is not None:
                    info.linkname = member.link
                chosen.append(info)
            with atomic_dir(target) as tmp:
                os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the tree normal perms
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=chosen, **extra)  # type: ignore[arg-type]
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError) as exc:
        raise DataError(
            f"could not extract {archive}: {exc}; the archive may be corrupt: delete it and "
            "download it again"
        ) from exc
    return _files(members, target)


def _tar_infos(tar: tarfile.TarFile, archive: Path, limits: Limits) -> list[tarfile.TarInfo]:
    """The member headers, stopping as soon as there are too many (a tar has no index, so
    reading millions of headers of a bomb would already take memory)."""
    infos = []
    while (info := tar.next()) is not None:
        infos.append(info)
        if len(infos) > limits.max_members:
            raise _over_limit(archive, "members", f"more than {limits.max_members:,}", limits)
    return infos


def _tar_member(info: tarfile.TarInfo, archive: Path) -> _Member:
    parts = _parts(info.name, archive, info.name)
    if info.isreg():
        return _Member(info.name, parts, "file", size=info.size)
    if info.isdir():
        return _Member(info.name, parts, "dir")
    if info.issym():
        return _Member(info.name, parts, "symlink", info.linkname.replace("\\", "/"))
    if info.islnk():
        link_parts = _parts(info.linkname, archive, info.name, "hardlink target")
        return _Member(info.name, parts, "hardlink", "/".join(link_parts))
    kind = "device" if info.ischr() or info.isblk() else "fifo" if info.isfifo() else "special"
    raise _refuse(archive, info.name, f"is a {kind} file, which a data archive never needs")


# --- zip ----------------------------------------------------------------------------------------


def _extract_zip(archive: Path, target: Path, limits: Limits) -> list[Path]:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                raise _over_limit(archive, "members", f"{len(infos):,}", limits)
            members = [_zip_member(zf, info, archive) for info in infos]
            _validate(members, archive)
            _check_limits(members, archive, limits)
            written = [0]  # bytes written so far, across members
            with atomic_dir(target) as tmp:
                os.chmod(tmp, 0o777 & ~_UMASK)
                for info, member in zip(infos, members, strict=True):
                    _write_zip_member(zf, info, member, tmp, archive, limits, written)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"could not extract {archive}: {exc}; the archive may be corrupt: delete it and "
            "download it again"
        ) from exc
    return _files(members, target)


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: Path) -> _Member:
    parts = _parts(info.filename, archive, info.filename)
    if info.flag_bits & 0x1:
        raise _refuse(archive, info.filename, "is encrypted; decrypt the archive yourself first")
    mode = info.external_attr >> 16  # Unix st_mode when the archiver recorded one
    if mode and stat.S_ISLNK(mode):
        if info.file_size > _MAX_ZIP_LINK_BYTES:
            raise _refuse(archive, info.filename, "is a symlink with an implausibly long target")
        link = zf.read(info).decode("utf-8", errors="replace").replace("\\", "/")
        return _Member(info.filename, parts, "symlink", link)
    if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
        raise _refuse(
            archive, info.filename, "is a device or fifo, which a data archive never needs"
        )
    if mode and stat.S_ISSOCK(mode):
        raise _refuse(archive, info.filename, "is a socket, which a data archive never needs")
    if info.is_dir():
        return _Member(info.filename, parts, "dir")
    return _Member(info.filename, parts, "file", size=info.file_size)


def _write_zip_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    member: _Member,
    root: Path,
    archive: Path,
    limits: Limits,
    written: list[int],
) -> None:
    """Write one validated member at its normalised path; zipfile would make symlinks files.

    The bytes are counted as they arrive: a member that yields more than its header declares,
    or that fails its CRC because the header understated it, stops the extraction.
    """
    if not member.parts:
        return
    path = root.joinpath(*member.parts)
    if member.kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if member.kind == "symlink":
        assert member.link is not None
        os.symlink(member.link, path)
        return
    count = 0
    try:
        with zf.open(info) as src, open(path, "wb") as dst:
            while block := src.read(1 << 20):
                count += len(block)
                written[0] += len(block)
                if count > info.file_size:
                    raise _lying_member(archive, info, f"yields more than {info.file_size:,} bytes")
                if written[0] > limits.max_bytes:
                    raise _over_limit(
                        archive, "unpacked bytes", f"more than {limits.max_bytes:,}", limits
                    )
                dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _lying_member(archive, info, f"fails its check ({exc})") from exc


# --- checks shared by both formats --------------------------------------------------------------


def _parts(name: str, archive: Path, member: str, what: str = "path") -> tuple[str, ...]:
    """Normalised components of a member path; refuses absolute paths, drives and `..`.

    Backslashes count as separators: Windows archivers write them, and `..\\x` must not pass.
    """
    if "\x00" in name:
        raise _refuse(archive, member, f"has a NUL byte in its {what}")
    unified = name.replace("\\", "/")
    if unified.startswith("/"):
        raise _refuse(archive, member, f"has an absolute path as its {what} ({name!r})")
    if len(unified) >= 2 and unified[1] == ":" and unified[0].isalpha():
        raise _refuse(archive, member, f"has a drive-qualified {what} ({name!r})")
    parts = tuple(part for part in unified.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, member, f"has a '..' component in its {what} ({name!r})")
    return parts


def _validate(members: Sequence[_Member], archive: Path) -> None:
    """Check every member against the whole archive before anything is written."""
    symlinks = {m.parts: m.link for m in members if m.kind == "symlink" and m.link is not None}
    counts = Counter(m.parts for m in members if m.parts)
    seen_files: set[tuple[str, ...]] = set()  # a hardlink may only point back at earlier files
    for member in members:
        if not member.parts:
            if member.kind != "dir":
                raise _refuse(archive, member.name, "has an empty path")
            continue
        for depth in range(1, len(member.parts)):
            if member.parts[:depth] in symlinks:
                through = "/".join(member.parts[:depth])
                raise _refuse(archive, member.name, f"would be written through symlink {through!r}")
        if member.kind in ("symlink", "hardlink") and counts[member.parts] > 1:
            raise _refuse(archive, member.name, "is a link whose path appears more than once")
        if member.kind == "symlink":
            _check_symlink(member, symlinks, archive)
        elif member.kind == "hardlink":
            _check_hardlink(member, symlinks, seen_files, archive)
        elif member.kind == "file":
            seen_files.add(member.parts)


def _check_symlink(member: _Member, symlinks: Mapping[tuple[str, ...], str], archive: Path) -> None:
    link = member.link or ""
    if link.startswith("/") or (len(link) >= 2 and link[1] == ":" and link[0].isalpha()):
        raise _refuse(archive, member.name, f"is a symlink to an absolute path ({link!r})")
    start = member.parts[:-1] + tuple(link.split("/"))
    if not link or _resolve(start, symlinks, 0) is None:
        raise _refuse(
            archive, member.name, f"is a symlink to {link!r}, which leaves the target or loops"
        )


def _check_hardlink(
    member: _Member,
    symlinks: Mapping[tuple[str, ...], str],
    files: set[tuple[str, ...]],
    archive: Path,
) -> None:
    link_parts = tuple((member.link or "").split("/"))
    resolved = _resolve(link_parts, symlinks, 0)
    if resolved is None:
        raise _refuse(archive, member.name, f"is a hardlink to {member.link!r} outside the target")
    if resolved not in files:
        raise _refuse(
            archive,
            member.name,
            f"is a hardlink to {member.link!r}, which is not an earlier file in the archive",
        )


def _resolve(
    parts: Sequence[str], symlinks: Mapping[tuple[str, ...], str], depth: int
) -> tuple[str, ...] | None:
    """Where `parts` lands below the root once the archive's own symlinks are followed.

    Symlinks are expanded before a later `..` is applied, as the kernel does, so `x/../y` with `x`
    a link to `.` is seen to leave the root. None: the path leaves the root or loops.
    """
    if depth > _MAX_SYMLINK_DEPTH:
        return None
    stack: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        link = symlinks.get(tuple(stack))
        if link is None:
            continue
        if link.startswith("/"):
            return None
        resolved = _resolve((*stack[:-1], *link.split("/")), symlinks, depth + 1)
        if resolved is None:
            return None
        stack = list(resolved)
    return tuple(stack)


def _check_limits(members: Sequence[_Member], archive: Path, limits: Limits) -> None:
    """Member count and declared unpacked size against `limits`, before anything is written."""
    if len(members) > limits.max_members:
        raise _over_limit(archive, "members", f"{len(members):,}", limits)
    total = sum(m.size for m in members if m.kind == "file")
    if total > limits.max_bytes:
        raise _over_limit(archive, "unpacked bytes", f"{total:,}", limits)


def _over_limit(archive: Path, what: str, value: str, limits: Limits) -> DataError:
    key, limit = (
        ("max_archive_members", limits.max_members)
        if what == "members"
        else ("max_unpacked_bytes", limits.max_bytes)
    )
    return DataError(
        f"refusing to extract {archive}: it holds {value} {what}, over the limit of {limit:,} "
        f"({limits.params_key}.{key}); nothing was extracted. A corpus archive this large is "
        "most likely a zip bomb or the wrong file: download it again from the official source, "
        f"or, if you trust it and have the disk space, raise `{limits.params_key}.{key}` in "
        "params.yaml"
    )


def _lying_member(archive: Path, info: zipfile.ZipInfo, how: str) -> DataError:
    return DataError(
        f"refusing to extract {archive}: member {info.filename!r} {how}, but its header declares "
        f"{info.file_size:,} bytes; nothing was extracted. The archive may be corrupt, or a zip "
        "bomb that understates its size: delete it and download it again from the official source"
    )


def _files(members: Sequence[_Member], target: Path) -> list[Path]:
    return sorted({target.joinpath(*m.parts) for m in members if m.kind != "dir" and m.parts})


def _refuse(archive: Path, member: str, why: str) -> DataError:
    return DataError(
        f"refusing to extract {archive}: member {member!r} {why}; nothing was extracted. The "
        "archive is damaged or hostile: download it again from the official source"
    )
