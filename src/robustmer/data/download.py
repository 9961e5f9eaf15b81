"""Resumable, checksum-verified downloads of corpus archives.

Corpora are gigabytes on servers that drop connections, so a transfer writes to `<dest>.part`,
resumes with an HTTP Range request, and only becomes `<dest>` once its sha256 matches the digest
pinned in the registry: a changed or corrupted server copy can never slip into the pipeline.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tqdm import tqdm

from robustmer.errors import DataError
from robustmer.io import sha256_file

log = logging.getLogger(__name__)

_USER_AGENT = "robustmer-downloader/1"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
# Errors a dropped or refused connection raises while opening or reading a response.
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    expected_size: int | None = None,
    timeout: float = 60,
    chunk: int = 1 << 20,
    progress: bool = True,
    allow_unverified: bool = False,
    params_key: str = "acquire.<dataset>",
) -> Path:
    """Download `url` to `dest`, resuming a previous `.part`, and verify its sha256.

    Returns `dest`. An existing `dest` with the pinned digest is returned without any network
    access; one with another digest is an error, never overwritten. `sha256=None` is refused
    unless `allow_unverified=True`, in which case the digest is logged so the user can pin it.
    `params_key` is where the dataset's settings live in params.yaml, for the messages.
    """
    dest = Path(dest)
    expected = normalise_sha256(sha256, url)
    if expected is None and not allow_unverified:
        raise DataError(
            f"no sha256 is pinned for {url} (destination {dest}); refusing to download an "
            f"unverified file. Pin its checksum as `{params_key}.sha256: <digest>` in "
            f"params.yaml (run `sha256sum` on a copy you trust), or set "
            f"`{params_key}.allow_unverified: true` to download it once unverified: the "
            "digest is then printed for you to pin."
        )
    if dest.exists():
        return _check_existing(dest, url, expected)

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _fetch(url, part, expected_size=expected_size, timeout=timeout, chunk=chunk, progress=progress)
    _check_size(part, url, expected_size)
    actual = sha256_file(part)
    if expected is None:
        log.warning(
            "%s: downloaded without a pinned checksum; sha256=%s. If you trust this file, pin "
            "it in params.yaml as `%s.sha256: %s` (and drop allow_unverified).",
            url,
            actual,
            params_key,
            actual,
        )
    elif actual != expected:
        part.unlink(missing_ok=True)
        raise DataError(
            f"sha256 mismatch for {url} (destination {dest}): expected {expected}, got {actual}. "
            "The server copy changed or the download was corrupted; the partial file was "
            "deleted. Re-run to download again, or update the sha256 in the registry only if "
            "you trust the new file."
        )
    os.replace(part, dest)
    return dest


def normalise_sha256(sha256: str | None, url: str) -> str | None:
    """The pinned digest in lower case; a malformed one is a DataError naming the URL."""
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not _SHA256_RE.match(digest):
        raise DataError(
            f"the sha256 pinned for {url} is {sha256!r}, which is not a 64-character hex digest; "
            "fix acquire.<dataset>.sha256 in params.yaml"
        )
    return digest


def _check_existing(dest: Path, url: str, expected: str | None) -> Path:
    """An existing file is reused only when it is the pinned one (no network access at all)."""
    actual = sha256_file(dest)
    if expected is None:
        log.warning(
            "%s already exists and no checksum is pinned; using it as is (sha256=%s). Pin it as "
            "acquire.<dataset>.sha256 in params.yaml if you trust this file.",
            dest,
            actual,
        )
        return dest
    if actual != expected:
        raise DataError(
            f"{dest} already exists but its sha256 is {actual}, not the pinned {expected} for "
            f"{url}; refusing to overwrite it. Delete it to download again, or update the sha256 "
            "in the registry only if you trust that file."
        )
    return dest


def _fetch(
    url: str,
    part: Path,
    *,
    expected_size: int | None,
    timeout: float,
    chunk: int,
    progress: bool,
) -> None:
    """Bring `part` up to the server's full content, resuming when the server allows it."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset == expected_size:
        return  # a previous run got every byte but stopped before verifying
    if expected_size is not None and offset > expected_size:
        log.info("%s: %s is longer than the registry's size; restarting from zero", url, part)
        part.unlink()
        offset = 0
    response = _open(url, offset, timeout)
    if response is None:  # 416: the part already holds every byte; the checksum decides
        return
    total = _content_length(response)
    if offset and getattr(response, "status", None) == 206 and _range_start(response) == offset:
        total = None if total is None else total + offset
    elif offset:
        # 200, a file:// URL or a range we did not ask for: the body starts at byte zero.
        log.info("%s: the server did not resume at byte %d; restarting from zero", url, offset)
        response.close()
        part.unlink()
        offset = 0
        response = _open(url, 0, timeout)
        if response is None:  # unreachable: 416 is only accepted for a ranged request
            raise DataError(f"{url}: the server answered 416 to a plain request; re-run later")
        total = _content_length(response)
    with response:
        if expected_size is not None and total is not None and total != expected_size:
            raise DataError(
                f"{url}: the server reports {total} bytes but the registry expects "
                f"{expected_size}; the server copy changed. Update the registry only if you "
                "trust the new file."
            )
        _stream(
            response,
            url,
            part,
            offset,
            total if total is not None else expected_size,
            chunk,
            progress,
        )


def _open(url: str, offset: int, timeout: float) -> IO[bytes] | None:
    """Open `url` from `offset`; None means the server says there is nothing left (416)."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            exc.close()
            return None
        raise DataError(
            f"downloading {url} failed: HTTP {exc.code} {exc.reason}. Check the URL in the "
            "registry and that the server is up, then re-run."
        ) from exc
    except ValueError as exc:  # unknown scheme or malformed URL
        raise DataError(f"cannot download {url!r}: {exc}; fix the URL in the registry") from exc
    except _NETWORK_ERRORS as exc:
        raise _network_error(url, exc, offset) from exc


def _stream(
    response: IO[bytes],
    url: str,
    part: Path,
    offset: int,
    total: int | None,
    chunk: int,
    progress: bool,
) -> None:
    """Append the body to `part`; a dropped connection keeps what arrived for the next resume."""
    received = offset
    with (
        open(part, "ab" if offset else "wb") as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not _progress_enabled(progress),
        ) as bar,
    ):
        while True:
            try:
                block = response.read(chunk)
            except _NETWORK_ERRORS as exc:
                raise _network_error(url, exc, received) from exc
            if not block:
                break
            out.write(block)
            received += len(block)
            bar.update(len(block))
    if total is not None and received < total:
        raise _network_error(url, f"connection closed after {received} of {total} bytes", received)


def _check_size(part: Path, url: str, expected_size: int | None) -> None:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DataError(
            f"{url}: downloaded {size} bytes but the registry expects {expected_size}; the "
            "partial file was deleted. Re-run to download again, or update the registry only "
            "if you trust the new file."
        )


def _content_length(response: IO[bytes]) -> int | None:
    value = response.headers.get("Content-Length")  # type: ignore[attr-defined]
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _range_start(response: IO[bytes]) -> int | None:
    match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", "").strip())  # type: ignore[attr-defined]
    return int(match.group(1)) if match else None


def _network_error(url: str, exc: object, received: int) -> DataError:
    return DataError(
        f"downloading {url} failed after {received} bytes: {exc}. The partial file is kept; "
        "re-running resumes the download."
    )


def _progress_enabled(progress: bool) -> bool:
    """Progress bars clutter logs of batch runs; ROBUSTMER_NO_PROGRESS=1 turns them off."""
    return progress and os.environ.get("ROBUSTMER_NO_PROGRESS", "") != "1"
