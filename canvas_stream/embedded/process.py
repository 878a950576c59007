"""What the embedded servers share: their errors, free ports, and owning one child process.

Each server owns its process directly (``subprocess.Popen``): ``stop()`` terminates and reaps it,
an ``atexit`` hook stops whatever is still running when the interpreter exits, and on Linux the
child also gets a parent-death signal so it does not outlive a killed parent.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Self

from canvas_stream.errors import CanvasStreamError

__all__ = ["REGISTRY", "ServerProcess", "ServiceError", "free_port", "pdeathsig_preexec", "tail", "terminate"]


class ServiceError(CanvasStreamError, RuntimeError):
    """A local service failed to start or to answer."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path | None, lines: int = 40) -> str:
    """The last lines of a server's log, for the error that says why it did not start."""
    if path is None or not path.exists():
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:  # pragma: no cover - unreadable log
        return f"(log unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


_PR_SET_PDEATHSIG = 1


def pdeathsig_preexec(sig: int):
    """A preexec_fn asking Linux to send ``sig`` to the child when its parent thread dies.

    Only used when starting from the main thread: the signal fires when the *thread* that forked
    exits, which for a worker thread would kill the server far too early.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None
    parent = os.getpid()

    def _preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # parent already gone between fork and prctl
            os.kill(os.getpid(), sig)

    return _preexec


class _Registry:
    """Live services, stopped at interpreter exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, Any] = {}
        atexit.register(self.stop_all)

    def add(self, service: Any) -> None:
        with self._lock:
            self._live[id(service)] = service

    def discard(self, service: Any) -> None:
        with self._lock:
            self._live.pop(id(service), None)

    def stop_all(self) -> None:
        with self._lock:
            services = list(self._live.values())
        for service in reversed(services):
            with contextlib.suppress(Exception):
                service.stop()


REGISTRY = _Registry()


def terminate(proc: subprocess.Popen[bytes], first: int, grace: float) -> None:
    """Send ``first``, wait ``grace`` seconds, then SIGKILL; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(first)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


class ServerProcess(abc.ABC):
    """What both embedded servers share: one child process, started and stopped as a context manager."""

    _proc: subprocess.Popen[bytes] | None

    @abc.abstractmethod
    def start(self) -> str:
        """Start the server; return the address clients use."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server and reap its process."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
