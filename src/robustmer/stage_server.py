"""The warm stage server behind `robustmer.launcher`: imports once, forks a child per command.

Started detached by the launcher, one per key (interpreter, `sys.path`, packages, sources; a lock
file keeps it to one). It imports the heavy libraries and robustmer's stage modules, listens on a
Unix socket in a folder only its user can enter, and for each connection forks a child that
becomes the client's command: the client's standard streams (passed as file descriptors), working
directory, environment, umask and argv, then `robustmer.cli.main`. The server itself never runs
a stage, a torch operation or a thread, so every child starts from the state a fresh process has
after its imports. The server reaps each child and sends its exit status to its client (128 + n
when a signal ended it), and exits after the idle time with no child running.

The child reads the connection for signals the client forwards and raises them on itself; the
connection closing before the child ends means the client was killed, and the child is then
killed too (SIGKILL), as a process of the client's own would have been.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from robustmer.launcher import HEADER, STARTED, STATUS, idle_seconds

# What a stage imports before it does any work (about 4.5 s of a cell's 6.5 s on 2 CPU cores).
PRELOAD = (
    "numpy", "pandas", "torch", "yaml", "typer",
    "mlflow", "mlflow.tracking", "mlflow.entities", "mlflow.store.tracking.sqlalchemy_store",
    "matplotlib.figure", "matplotlib.backends.backend_agg",
    "robustmer.cli", "robustmer.config", "robustmer.gate_status", "robustmer.data.model_data",
    "robustmer.tracking.mlflow_run", "robustmer.models.registry", "robustmer.training.runner",
    "robustmer.evaluation.runner", "robustmer.evaluation.report",
    "robustmer.evaluation.skipped_cell", "robustmer.corruption.condition_store",
    "robustmer.tuning.space", "robustmer.tuning.study",
)  # fmt: skip


def preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def serve(path: str, key: str) -> None:
    """Serve commands on the socket `path` until idle; return at once if another server has it."""
    sock_path = Path(path)
    lock = open(sock_path.with_suffix(".lock"), "a")  # noqa: SIM115 (held for the server's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # who serves this key (tests and users can end it)
    lock.flush()
    preload()
    # Forking a process with Python threads is unsafe: serve nothing then. (The native pools the
    # imports start, OpenBLAS's and pyarrow's jemalloc thread, have their own fork handlers.)
    if threading.active_count() != 1:
        return
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()  # left by a server that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping: list[int] = []  # SIGTERM/SIGINT: take no new command, let the running ones end
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: stopping.append(signum))
    children: dict[int, socket.socket] = {}
    idle = idle_seconds(os.environ)
    last = time.monotonic()
    try:
        while not (stopping and not children):
            timeout = None if children else idle - (time.monotonic() - last)
            if timeout is not None and timeout <= 0:
                break
            watched = [wake_r] if stopping else [listener, wake_r]
            ready, _, _ = select.select(watched, [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            if _reap(children):
                last = time.monotonic()
            if listener in ready and not stopping:
                conn, _ = listener.accept()
                pid = os.fork()
                if pid == 0:
                    _child(conn, listener, (wake_r, wake_w), lock)
                children[pid] = conn
    finally:
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()  # new clients run their command themselves from here on
        listener.close()  # a client already queued sees the close before STARTED: the same


def _reap(children: dict[int, socket.socket]) -> bool:
    """Send each ended child's exit status to its client; whether any ended."""
    ended = False
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        conn = children.pop(pid, None)
        if conn is None:
            continue
        ended = True
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            conn.sendall(STATUS.pack(128 - code if code < 0 else code))
        conn.close()
    return ended


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """The request (JSON after a length) and the three standard-stream descriptors with it."""
    fds: list[int] = []
    data, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(3 * 4))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(int.from_bytes(payload[i : i + 4], sys.byteorder)
                       for i in range(0, len(payload) - len(payload) % 4, 4))  # fmt: skip
    while len(data) < HEADER.size:
        data += conn.recv(4096)
    (size,) = HEADER.unpack(data[: HEADER.size])
    body = data[HEADER.size :]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the client left before its request was complete")
        body += chunk
    return json.loads(body), fds


def _watch(conn: socket.socket) -> None:
    """Raise the signals the client forwards; die with the client when its connection closes."""
    while True:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGKILL)
        for signum in data:
            os.kill(os.getpid(), signum)


def _child(conn: socket.socket, listener: socket.socket, wake: tuple[int, int], lock) -> None:
    """Become the client's command; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        listener.close()
        lock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request, fds = _receive(conn)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.umask(int(request["umask"]))
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        encoding = request.get("encoding") or "utf-8"
        for stream in (sys.stdout, sys.stderr):  # as Python sets them up for these streams
            line_buffering = stream is sys.stderr or stream.isatty()
            with contextlib.suppress(Exception):
                stream.reconfigure(encoding=encoding, line_buffering=line_buffering)
        conn.sendall(STARTED)
        threading.Thread(target=_watch, args=(conn,), daemon=True).start()
        from robustmer.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:  # what an uncaught exception does to a fresh process
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1
