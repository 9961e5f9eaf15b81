"""Resumable, checksum-verified downloads against a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from robustmer.data.download import download
from robustmer.errors import DataError

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; `ranges` records each request's Range."""

    payload: bytes = PAYLOAD
    fail_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False  # answer 200 with the whole body even when asked for a range
    wrong_range_start: bool = False  # answer 206 but from byte zero
    ranges: list[str | None] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        header = self.headers.get("Range")
        state.ranges.append(header)
        if self.path != "/corpus.zip":
            self.send_error(404)
            return
        body, start = state.payload, 0
        if header and not state.ignore_range:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if state.wrong_range_start:
                start = 0
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        body = body[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.fail_after is not None:
            self.wfile.write(body[: state.fail_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _Server(http.server.ThreadingHTTPServer):
    state: ServerState


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/corpus.zip", httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTMER_NO_PROGRESS", "1")


def test_fresh_download_is_verified_and_renamed(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    dest = tmp_path / "sub" / "corpus.zip"
    assert download(url, dest, DIGEST, expected_size=len(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("corpus.zip.part").exists()
    assert state.ranges == [None]


def test_interrupted_transfer_keeps_part_and_resumes_with_range(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    dest = tmp_path / "corpus.zip"
    part = tmp_path / "corpus.zip.part"
    state.fail_after = 5000
    with pytest.raises(DataError, match="re-running resumes") as err:
        download(url, dest, DIGEST, chunk=1024)
    assert url in str(err.value)
    assert part.read_bytes() == PAYLOAD[:5000]
    assert not dest.exists()

    state.fail_after = None
    download(url, dest, DIGEST, chunk=1024)
    assert state.ranges == [None, "bytes=5000-"]
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_sha_mismatch_deletes_part_and_names_url(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.payload = b"a different file" * 100
    dest = tmp_path / "corpus.zip"
    with pytest.raises(DataError) as err:
        download(url, dest, DIGEST)
    message = str(err.value)
    assert url in message and DIGEST in message
    assert hashlib.sha256(state.payload).hexdigest() in message
    assert "update the sha256" in message
    assert not dest.exists()
    assert not (tmp_path / "corpus.zip.part").exists()


def test_existing_verified_dest_makes_no_request(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    dest = tmp_path / "corpus.zip"
    dest.write_bytes(PAYLOAD)
    assert download(url, dest, DIGEST.upper()) == dest
    assert state.ranges == []


def test_existing_dest_with_other_digest_is_never_overwritten(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    dest = tmp_path / "corpus.zip"
    dest.write_bytes(b"stale copy")
    with pytest.raises(DataError, match="refusing to overwrite"):
        download(url, dest, DIGEST)
    assert dest.read_bytes() == b"stale copy"
    assert state.ranges == []


def test_server_without_range_support_restarts_from_zero(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.ignore_range = True
    part = tmp_path / "corpus.zip.part"
    part.write_bytes(b"garbage that must not stay in front")
    dest = download(url, tmp_path / "corpus.zip", DIGEST)
    assert dest.read_bytes() == PAYLOAD
    assert state.ranges[0] == f"bytes={len(b'garbage that must not stay in front')}-"


def test_range_answered_from_the_wrong_offset_restarts(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.wrong_range_start = True
    (tmp_path / "corpus.zip.part").write_bytes(PAYLOAD[:100])
    dest = download(url, tmp_path / "corpus.zip", DIGEST)
    assert dest.read_bytes() == PAYLOAD
    assert state.ranges == ["bytes=100-", None]


def test_complete_part_answered_416_is_verified(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    (tmp_path / "corpus.zip.part").write_bytes(PAYLOAD)
    dest = download(url, tmp_path / "corpus.zip", DIGEST)
    assert dest.read_bytes() == PAYLOAD
    assert state.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_complete_part_of_known_size_is_verified_without_a_request(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    (tmp_path / "corpus.zip.part").write_bytes(PAYLOAD)
    dest = download(url, tmp_path / "corpus.zip", DIGEST, expected_size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert state.ranges == []


def test_overlong_part_restarts_from_zero(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    (tmp_path / "corpus.zip.part").write_bytes(PAYLOAD + b"extra")
    dest = download(url, tmp_path / "corpus.zip", DIGEST, expected_size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert state.ranges == [None]


def test_missing_sha256_is_refused_unless_allowed(
    server: tuple[str, ServerState], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, state = server
    dest = tmp_path / "corpus.zip"
    with pytest.raises(DataError) as refused:
        download(url, dest, None, params_key="acquire.emodb")
    assert "acquire.emodb.sha256: <digest>" in str(refused.value)
    assert "acquire.emodb.allow_unverified: true" in str(refused.value)
    assert state.ranges == [] and not dest.exists()

    with caplog.at_level(logging.WARNING, logger="robustmer.data.download"):
        download(url, dest, None, allow_unverified=True, params_key="acquire.emodb")
    assert dest.read_bytes() == PAYLOAD
    assert f"acquire.emodb.sha256: {DIGEST}" in caplog.text


def test_malformed_sha256_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="64-character hex"):
        download("http://127.0.0.1:1/x", tmp_path / "x", "abc123")


def test_size_disagreeing_with_registry_is_refused(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, _ = server
    dest = tmp_path / "corpus.zip"
    with pytest.raises(DataError, match=f"expects {len(PAYLOAD) + 1}"):
        download(url, dest, DIGEST, expected_size=len(PAYLOAD) + 1)
    assert not dest.exists()


def test_unreachable_server_names_url_and_keeps_part(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/corpus.zip"
    part = tmp_path / "corpus.zip.part"
    part.write_bytes(PAYLOAD[:10])
    with pytest.raises(DataError, match="re-running resumes") as err:
        download(url, tmp_path / "corpus.zip", DIGEST, timeout=5)
    assert url in str(err.value)
    assert part.read_bytes() == PAYLOAD[:10]


def test_http_error_status_is_reported(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, _ = server
    missing = url.replace("corpus.zip", "missing.zip")
    with pytest.raises(DataError, match="HTTP 404") as err:
        download(missing, tmp_path / "x", DIGEST)
    assert missing in str(err.value)


def test_file_url_downloads_and_restarts_over_a_stale_part(tmp_path: Path) -> None:
    source = tmp_path / "server" / "corpus.zip"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "corpus.zip"
    (tmp_path / "corpus.zip.part").write_bytes(b"stale")
    assert download(source.as_uri(), dest, DIGEST).read_bytes() == PAYLOAD


def test_progress_bar_follows_flag_and_environment(
    server: tuple[str, ServerState],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = server
    download(url, tmp_path / "a.zip", DIGEST, progress=True)  # ROBUSTMER_NO_PROGRESS=1
    assert "a.zip" not in capsys.readouterr().err
    monkeypatch.delenv("ROBUSTMER_NO_PROGRESS")
    download(url, tmp_path / "b.zip", DIGEST, progress=False)
    assert "b.zip" not in capsys.readouterr().err
    download(url, tmp_path / "c.zip", DIGEST, progress=True)
    assert "c.zip" in capsys.readouterr().err
