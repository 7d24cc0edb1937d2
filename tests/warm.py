"""
Command lines of this environment's Python, started from a warm interpreter.

Every ``python -m monai.bundle ...`` (or our tools, or ``e2enet-segment``) spends about 5 CPU seconds importing
torch and MONAI (MONAI imports all its submodules, ignite and ``torch.distributed.optim`` among them) before any
work; the tests run about a hundred of them. :func:`run` takes the command line ``subprocess.run`` would, and where
it is this Python with ``-m module`` or a script, a server that has imported torch and MONAI once forks a process
for it, which runs the module or script as the interpreter would: ``sys.argv``, ``sys.path[0]``, the working folder,
the environment, the standard streams, ``torch``'s thread count from ``OMP_NUM_THREADS``, freshly seeded random
generators; an uncaught exception goes through ``sys.excepthook`` and exits with 1, and the process ends with the
interpreter's own shutdown (threads joined, ``atexit`` handlers). Modules MONAI does not import (ours included) are
imported by that process, as in a fresh one. Any other command, and any environment that changes how an
interpreter starts (``PYTHON*`` variables), runs as a real subprocess. Tests that measure a process itself (its
memory, its start-up) and those that run what a user or the Model Zoo types, literally, use ``subprocess``.

The server is one per test session, in the tests' own process session and process group (so that Linux's
autogroup scheduling shares the CPU as for any subprocess); the forked command reports its pid first, so that a
timeout kills it, and its exit status last.
"""

from __future__ import annotations

import atexit
import io
import json
import locale
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["run", "run_bundle"]

# what the server imports once: torch, then MONAI (which loads all its submodules except these)
_PRELOAD = ("torch", "monai", "monai.bundle", "monai.handlers")
_server: tuple[subprocess.Popen, str, dict[str, str]] | None = None


def _startup(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that change how an interpreter starts (``PYTHONUNBUFFERED`` is applied per command)."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED"}


def _start() -> tuple[str, dict[str, str]]:
    """The server's socket path and start-up variables, starting it on first use (killed when the tests end)."""
    global _server
    if _server is None or _server[0].poll() is not None:
        path = os.path.join(tempfile.mkdtemp(prefix="warm-"), "socket")
        # no thread-count variables: the server's torch then has the default that each command's variables override
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        proc = subprocess.Popen([sys.executable, __file__, path], stdin=subprocess.DEVNULL, env=env)
        atexit.register(proc.kill)
        while not os.path.exists(path + ".ready"):
            if proc.poll() is not None:
                raise RuntimeError(f"the warm interpreter server exited with {proc.returncode}")
            time.sleep(0.05)
        _server = proc, path, _startup(env)
    return _server[1], _server[2]


def _target(cmd: Sequence[str]) -> list[str] | None:
    """``["-m", module, *args]`` or ``[script, *args]`` when ``cmd`` runs this Python that way, else ``None``."""
    if len(cmd) < 2 or cmd[0] != sys.executable:
        return None
    if cmd[1] == "-m" and len(cmd) > 2:
        return list(cmd[1:])
    if not cmd[1].startswith("-") and cmd[1].endswith(".py"):
        return list(cmd[1:])
    return None


def run(cmd: Sequence[str | os.PathLike], *, env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None, capture_output: bool = False, text: bool = False,
        timeout: float | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """
    As ``subprocess.run(cmd, env=env, cwd=cwd, capture_output=..., text=..., timeout=..., check=...)`` (standard
    input from ``/dev/null``), through the warm server where ``cmd`` is this Python with ``-m`` or a script.
    """
    cmd = [str(c) for c in cmd]
    env = dict(os.environ if env is None else env)
    target = _target(cmd)
    if target is None or _startup(env) != _start()[1]:
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=capture_output, text=text, timeout=timeout,
                              check=check, stdin=subprocess.DEVNULL)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull) as null:
        outputs = (out.fileno(), err.fileno()) if capture_output else (1, 2)
        request = json.dumps({"argv": target, "env": env, "cwd": str(cwd or os.getcwd())}).encode()
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(_start()[0])
            socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [null.fileno(), *outputs])
            pid = struct.unpack("!i", _recv(conn, 4))[0]
            conn.settimeout(timeout)
            try:
                status = struct.unpack("!i", _recv(conn, 4))[0]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(cmd, timeout) from None
        code = os.waitstatus_to_exitcode(status)
        stdout = stderr = None
        if capture_output:
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            if text:  # as subprocess's text mode: the locale's encoding, universal newlines
                stdout, stderr = (_decode(b) for b in (stdout, stderr))
    proc = subprocess.CompletedProcess(cmd, code, stdout, stderr)
    if check:
        proc.check_returncode()
    return proc


def run_bundle(*args, **kwargs) -> subprocess.CompletedProcess:
    """:func:`e2enet_monai.apps.runner.run_bundle` (without ``log_file``) through :func:`run`."""
    from e2enet_monai.apps.runner import run_bundle

    return run_bundle(*args, **kwargs, run=run)


def run_segment(*args: object, env: Mapping[str, str] | None = None, timeout: float = 600,
                check: bool = False) -> subprocess.CompletedProcess:
    """
    ``python -m e2enet_monai.segment ARGS`` through :func:`run`, its output captured as text. ``check``: assert
    that it exits with 0, the end of its standard error as the message.
    """
    proc = run([sys.executable, "-m", "e2enet_monai.segment", *map(str, args)], env=env, capture_output=True,
               text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _decode(data: bytes) -> str:
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def _recv(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise RuntimeError("the warm interpreter server closed the connection")
        data += chunk
    return data


# ------------------------------------------------------------------------------------------------- the server
def _execute(request: dict, fds: list[int]) -> None:
    """In the forked process: become the requested command, run it, and exit as the interpreter would."""
    import random
    import runpy

    import numpy as np
    import torch

    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # the standard streams as a new interpreter opens them on these files (-u / PYTHONUNBUFFERED included)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(open(0, "rb", closefd=False))
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(open(1, "wb", buffering=0 if unbuffered else -1, closefd=False),
                                                   line_buffering=os.isatty(1), write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(open(2, "wb", buffering=0 if unbuffered else -1, closefd=False),
                                                   errors="backslashreplace", line_buffering=not unbuffered,
                                                   write_through=unbuffered)
    threads = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads) if threads else _DEFAULT_THREADS)
    random.seed()
    np.random.seed()
    argv = request["argv"]
    code: object = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]  # runpy puts the module's file here, as -m does
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code
    except BaseException as e:
        tb = e.__traceback__
        # the traceback starts in the command's own code, as python's does for a script (for -m it shows two
        # frames of runpy's before it)
        while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, "<frozen runpy>"):
            tb = tb.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        code = 1
    raise SystemExit(code)


def _monitor(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In a process forked per command: fork the command, send its pid, wait, send its exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _execute(request, fds)
    try:
        for fd in fds:
            os.close(fd)
        conn.sendall(struct.pack("!i", pid))
        _, status = os.waitpid(pid, 0)
        conn.sendall(struct.pack("!i", status))
    except OSError:  # the client is gone (it timed out and killed the command)
        pass
    os._exit(0)


def _serve(path: str) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped by the kernel
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(16)
        Path(path + ".ready").touch()
        while True:
            conn, _ = listener.accept()
            head, fds, _, _ = socket.recv_fds(conn, 4, 3)
            size = struct.unpack("!I", head)[0]
            request = json.loads(_recv(conn, size))
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                _monitor(conn, request, fds)
            conn.close()
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    import torch

    _DEFAULT_THREADS = torch.get_num_threads()
    _serve(sys.argv[1])
