"""The README's run command on a bare machine: ``canvas-stream dev`` starts everything, events land,
Ctrl-C stops every process, and the warehouse survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time

import psutil
import pytest
from aiohttp import ClientSession
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream.services import free_port
from processors.warehouse.schema import SCHEMA
from tests.support.events import example, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key

pytestmark = pytest.mark.slow


async def start_dev(data_dir, port: int, jwks_url: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(LIVE_EVENTS_JWKS_URL=jwks_url, WORKER_BATCH_SECONDS="0.1", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "canvas_stream.cli", "dev", "--data-dir", str(data_dir), "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    lines: list[str] = []
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


async def test_dev_runs_everything_and_keeps_the_warehouse(server_dir):
    port = free_port()
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:
        proc, database_url = await start_dev(server_dir / "data", port, jwks.url)
        try:
            await wait_ready(port)
            async with ClientSession() as http:
                for event in (example("canvas", "course_created"), example("caliper", "logged_in")):
                    async with http.post(f"http://127.0.0.1:{port}/live-events", data=signed(event)) as response:
                        assert response.status == 200, await response.text()
            for _ in range(240):
                if await count_events(database_url) == 2:
                    break
                await asyncio.sleep(0.5)
            assert await count_events(database_url) == 2
        finally:
            if proc.returncode is None:
                await stop_dev(proc)

        proc, database_url = await start_dev(server_dir / "data", port, jwks.url)
        try:
            assert await count_events(database_url) == 2  # the embedded database kept the warehouse
        finally:
            await stop_dev(proc)
