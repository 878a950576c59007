"""Run canvas-stream roles as real child processes in tests, and always reap them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

QUICK_GROUP_SESSION_SECONDS = "6"  # the least WORKER_SESSION_TIMEOUT_SECONDS allows


def role_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTI_", "LIVE_EVENTS_", "KAFKA_", "WORKER_"))}
    # A free admin port of its own: several ingresses run side by side in a test. A worker's consumer
    # group gets the shortest session the setting allows: tansu holds a new group's first join for half
    # the session timeout (10 s at the default 20 s, 3 s at 6), and every test starts a group of its own.
    env.update({"LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "ADMIN_PORT": str(_free_port()),
                "WORKER_SESSION_TIMEOUT_SECONDS": QUICK_GROUP_SESSION_SECONDS})
    env.update(overrides)
    return env


def worker_env(database_url: str, bootstrap: str, topic: str, partitions: int = 3, **extra: str) -> dict[str, str]:
    """A worker's environment for ``topic``: a consumer group of the topic's own, short batches (the
    tests wait for rows)."""
    return role_env(DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic,
                    KAFKA_PARTITIONS=str(partitions), WORKER_GROUP_ID=f"{topic}-workers", WORKER_BATCH_SECONDS="0.1",
                    **extra)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``canvas-stream <args>`` in a child process with ``env``; its output captured, at most 60 s."""
    return subprocess.run([sys.executable, "-m", "canvas_stream.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Role:
    """One ``canvas-stream <role>`` process with its output in a log file."""

    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.role = role
        self.env = env
        self.log = Path(tempfile.mkstemp(prefix=f"canvas-stream-{role}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Role:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "canvas_stream.cli", self.role],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@contextlib.contextmanager
def running(*roles: Role) -> Iterator[tuple[Role, ...]]:
    try:
        for role in roles:
            role.start()
        yield roles
    finally:
        for role in roles:
            role.stop()


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0, interval: float = 0.25,
                     message: str = "condition") -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")
