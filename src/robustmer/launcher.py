"""The `robustmer` console script: run a stage in a warm process when one is ready.

A grid stage is mostly start-up: importing torch, pandas and MLflow costs 4-5 s, scoring a cell
about 2. DVC and Snakemake start one process per cell, so this client hands a stage command to a
local stage server (`robustmer.stage_server`) that has those libraries imported and forks one
child per command. The child gets this process's argv, working directory, environment, umask and
standard streams, so it is the same command in a process whose imports are already done.

- No server for this code yet: the command runs here, as it always did, and a server is started
  in the background for the next command. A server serves only the exact interpreter, `sys.path`,
  installed packages and robustmer sources it was started from (their paths, sizes and mtimes are
  its key), and ends after `ROBUSTMER_WARM_IDLE_S` seconds (default 300) without work.
- Signals sent to this client (Ctrl-C, SIGTERM from Snakemake or SLURM) are passed to the child,
  which stops cleanly as a stage does; if this client is killed (SIGKILL), the child is killed
  too. The client exits with the child's exit status (128 + n after a signal).
- `ROBUSTMER_WARM=0` turns it off; it is off inside SLURM jobs (a job is one command on a node
  of its own) and for commands that are not pipeline stages.

Only the standard library is imported here: this module runs before every command.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

WARM_ENV = "ROBUSTMER_WARM"
IDLE_ENV = "ROBUSTMER_WARM_IDLE_S"
DIR_ENV = "ROBUSTMER_WARM_DIR"  # where sockets and locks go (default: $XDG_RUNTIME_DIR or /tmp)
DEFAULT_IDLE_S = 300.0
# Commands worth a warm process: the pipeline stages (the rest are quick or interactive).
WARM_COMMANDS = frozenset({
    "acquire", "extract", "validate", "corrupt", "pretrain", "tune", "train", "evaluate",
    "report", "cross-corpus",
})  # fmt: skip
# Environment read by the preloaded libraries when they are imported (the server's own import
# environment must match the client's); everything else is read when used, in the child.
IMPORT_ENV_PREFIXES = ("PYTHON", "TORCH", "PYTORCH", "MPL", "MKL", "KMP", "LD_")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)  # fmt: skip
STARTED = b"R"  # the child's first byte: it runs the command (before it, the client may run it)
HEADER = struct.Struct("!I")
STATUS = struct.Struct("!i")


def enabled(argv: list[str], environ: os._Environ[str] | dict[str, str]) -> bool:
    """Whether this command may use (and start) a stage server."""
    if environ.get(WARM_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "SLURM_JOB_ID" in environ or not sys.platform.startswith("linux"):
        return False
    return len(argv) > 1 and argv[1] in WARM_COMMANDS and not {"-h", "--help"} & set(argv[2:])


def server_key(
    environ: os._Environ[str] | dict[str, str] | None = None, package: Path | None = None
) -> str:
    """What a server's imports depend on: interpreter, paths, packages and our own sources."""
    environ = os.environ if environ is None else environ
    package = Path(__file__).resolve().parent if package is None else package
    sources = []
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            sources.append((os.path.relpath(os.path.join(root, name), package), st.st_size,
                            st.st_mtime_ns))  # fmt: skip
    entries = []
    here = os.getcwd()
    for entry in sys.path:  # an install or upgrade changes its folder's mtime
        if os.path.abspath(entry or ".") == here:  # the working folder changes as stages write
            entries.append((entry, "cwd"))
            continue
        try:
            entries.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            entries.append((entry, None))
    env = sorted((k, v) for k, v in environ.items() if k.startswith(IMPORT_ENV_PREFIXES))
    blob = json.dumps([sys.executable, sys.version, str(package), entries, env, sources])
    return hashlib.sha256(blob.encode()).hexdigest()


def runtime_dir() -> Path:
    """A folder only this user can enter, for the servers' sockets and locks."""
    base = os.environ.get(DIR_ENV) or os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    folder = Path(base) / f"robustmer-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{folder} must belong to this user with mode 0700")
    return folder


def socket_path(key: str) -> Path:
    return runtime_dir() / f"{key[:24]}.sock"


def idle_seconds(environ: os._Environ[str] | dict[str, str]) -> float:
    try:
        return max(1.0, float(environ.get(IDLE_ENV, DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def connect(path: Path) -> socket.socket | None:
    """A connection to the server at `path`, or None when none listens there."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def start_server(key: str, path: Path) -> None:
    """Start a detached server for `key` (a second one for the same key exits at once)."""
    code = (
        "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
        "from robustmer.stage_server import serve; serve(sys.argv[2], sys.argv[3])"
    )
    subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(sys.path), str(path), key],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd="/",
    )  # fmt: skip


def _standard_fds() -> list[int]:
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:  # a closed stream reaches the child as /dev/null
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def run_remote(conn: socket.socket) -> int | None:
    """Run this command in the server's child; its exit status, or None if it never started."""
    umask = os.umask(0)
    os.umask(umask)
    request = json.dumps({
        "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
        "encoding": getattr(sys.stdout, "encoding", None) or "utf-8",
    }).encode()  # fmt: skip
    data = HEADER.pack(len(request)) + request
    fds = array.array("i", _standard_fds())
    try:
        sent = conn.sendmsg([data[:4096]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        conn.sendall(data[sent:])
        if conn.recv(1) != STARTED:
            return None  # the server was ending: nothing ran
    except OSError:
        return None

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            conn.send(bytes([signum]))

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    status = _recv_exact(conn, STATUS.size)
    if status is None:
        sys.stderr.write("error: the robustmer stage server ended before the command did; "
                         f"rerun it with {WARM_ENV}=0 to run it in its own process\n")  # fmt: skip
        return 1
    return STATUS.unpack(status)[0]


def main() -> None:
    """Entry point of the `robustmer` console script."""
    if enabled(sys.argv, os.environ):
        try:
            key = server_key()
            path = socket_path(key)
        except OSError:
            path = None
        if path is not None:
            conn = connect(path)
            if conn is not None:
                with conn:
                    code = run_remote(conn)
                if code is not None:
                    sys.exit(code)
            else:
                start_server(key, path)
    from robustmer.cli import main as run_here

    run_here()


if __name__ == "__main__":
    main()
