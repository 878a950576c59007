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
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Self

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
    """What both embedded servers share: one child process, started and stopped as a context manager.

    Subclasses implement ``_start``, ``address``, ``_kill`` and ``_cleanup`` with the helpers here:
    try ports, launch with the command logged, wait until a probe answers, forget the process.
    """

    def __init__(self, *, host: str, port: int | None, startup_timeout: float) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _start(self) -> None:
        """Prepare directories, spawn the server and wait until it answers (lock held)."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """What clients connect to (the server is running)."""

    @abc.abstractmethod
    def _kill(self) -> None:
        """Stop the process (if any), reap it, then :meth:`_forget` it."""

    @abc.abstractmethod
    def _cleanup(self) -> None:
        """Remove the temporary directories (after ``_kill``)."""

    def start(self) -> str:
        """Start the server unless it runs; return the address clients use."""
        with self._lock:
            if not self.is_running():
                self._start()
            return self.address

    def stop(self) -> None:
        """Stop the server, reap its process and remove what it does not keep (idempotent)."""
        with self._lock:
            self._kill()
            self._cleanup()

    def _started_port(self) -> int:
        if self.port is None:
            raise ServiceError(f"{type(self).__name__} is not started")
        return self.port

    def _forget(self) -> None:
        self._proc = None
        self.port = None
        REGISTRY.discard(self)

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

    def _start_on_a_port(self, spawn: Callable[[int], None]) -> None:
        """``spawn(port)`` on the requested port, else on up to three free ports in turn (another
        process may bind a free port before the server does)."""
        attempts = 1 if self.requested_port is not None else 3
        for attempt in range(attempts):
            port = self.requested_port or free_port(self.host)
            try:
                spawn(port)
                return
            except ServiceError:
                self._kill()
                if attempt == attempts - 1:
                    raise

    @contextlib.contextmanager
    def _command_log(self, cmd: list[str]) -> Iterator[IO[bytes]]:
        """The server log, opened for a command's output after a ``$ command`` line."""
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            yield log

    def _launch(self, cmd: list[str], port: int, *, env: Mapping[str, str], cwd: Path | None,
                death_signal: int, **popen: Any) -> None:
        """Start the server process in its own session, output to the log, registered for atexit."""
        with self._command_log(cmd) as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(death_signal),
                **popen,
            )
        self.port = port
        REGISTRY.add(self)

    def _wait_ready(self, ready: Callable[[], bool], *, name: str, where: str, not_ready: str,
                    interval: float) -> None:
        """Poll ``ready()`` until it is true; ServiceError (with the log's tail) if the process
        exits or ``startup_timeout`` passes first."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"{name} exited with code {self._proc.returncode} while starting on {where}; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{name} {not_ready} on {where} within {self.startup_timeout}s; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(interval)
