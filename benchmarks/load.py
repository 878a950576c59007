"""Load generators: wrk (closed loop, 64 connections) when installed, else an aiohttp client; an
aiohttp open-loop client at a fixed rate; and the row-visibility poller for end-to-end latency."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from processors.warehouse.schema import SCHEMA

LUA = Path(__file__).with_name("post.lua")


@dataclass
class LoadResult:
    tool: str
    requests: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    client_cpu_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def client_us_per_request(self) -> float:
        return self.client_cpu_s / self.requests * 1e6 if self.requests else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None and os.environ.get("BENCH_NO_WRK") != "1"


def closed_loop(url: str, tokens_path: Path, tokens: list[bytes], seconds: float, connections: int = 64,
                limit: int | None = None) -> LoadResult:
    """Fixed concurrency for ``seconds``; tokens are sent in order (wrapping if the pool runs out)."""
    if have_wrk() and limit is None:
        return _wrk(url, tokens_path, seconds, connections)
    return asyncio.run(_aiohttp_closed(url, tokens, seconds, connections, limit))


def _wrk(url: str, tokens_path: Path, seconds: float, connections: int) -> LoadResult:
    base = url.rsplit("/live-events", 1)[0]
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", str(LUA), base, "--", str(tokens_path)]
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cpu = 0.0
    try:
        while proc.poll() is None:
            try:
                t = proc.cpu_times()
                cpu = t.user + t.system
            except psutil.Error:
                pass
            time.sleep(0.2)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = re.search(r"WRKJSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk failed:\n{out}")
    data = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    errs = data["connect"] + data["read"] + data["write"] + data["timeout"]
    return LoadResult("wrk", data["requests"], data["requests"] - bad - errs, data["duration_us"] / 1e6,
                      data["p50_us"] / 1000, data["p99_us"] / 1000, errors=bad + errs, client_cpu_s=cpu,
                      extra={"pool": data["pool"]})


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _aiohttp_closed(url: str, tokens: list[bytes], seconds: float, connections: int,
                          limit: int | None) -> LoadResult:
    import aiohttp

    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    latencies: list[float] = []
    errors = 0
    counter = iter(range(limit if limit is not None else 1 << 62))
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            nonlocal errors
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                async with session.post(url, data=tokens[i % len(tokens)],
                                        headers={"Content-Type": "application/jwt"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    cpu = sum(me.cpu_times()[:2]) - cpu0
    return LoadResult("aiohttp", len(latencies), len(latencies) - errors, elapsed, _pct(latencies, 0.5) * 1000,
                      _pct(latencies, 0.99) * 1000, errors=errors, client_cpu_s=cpu)


@dataclass
class OpenLoopResult:
    rate: float
    sent: int
    ok: int
    p50_ms: float
    p99_ms: float
    e2e_p50_ms: float
    e2e_p99_ms: float
    e2e_seen: int
    poll_ms: float
    client_cpu_s: float
    tracked: int = 0


async def open_loop(url: str, tokens: list[bytes], ids: list[str], rate: float, seconds: float,
                    dsn: str | None, start: int = 0, poll_interval: float = 0.02,
                    settle: float = 10.0, tracked_per_second: float = 100) -> OpenLoopResult:
    """Send at a fixed rate (latency from the scheduled send time, so a stall is not hidden) and,
    with ``dsn``, poll the events table for a sample of the ids sent (every k-th, ~``tracked_per_second``)
    to time when each row became visible. Sampling keeps the poller's own load small and constant: it
    shares the CPUs and the database with the system under test."""
    import aiohttp

    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    n = int(rate * seconds)
    every = max(1, round(rate / tracked_per_second))
    scheduled: dict[str, float] = {}
    http_lat: list[float] = []
    e2e: dict[str, float] = {}
    errors = 0
    done_sending = asyncio.Event()
    poll_times: list[float] = []

    async def poller() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            deadline = None
            while True:
                pending = [i for i in scheduled if i not in e2e]
                if done_sending.is_set():
                    deadline = deadline or time.perf_counter() + settle
                    if not pending or time.perf_counter() > deadline:
                        return
                if pending:
                    t0 = time.perf_counter()
                    rows = await conn.fetch(f"SELECT event_id FROM {SCHEMA}.events WHERE event_id = ANY($1::text[])",
                                            pending)
                    t1 = time.perf_counter()
                    poll_times.append(t1 - t0)
                    for r in rows:
                        e2e[r[0]] = t1 - scheduled[r[0]]
                await asyncio.sleep(poll_interval)
        finally:
            await conn.close()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        async def send(i: int, at: float) -> None:
            nonlocal errors
            token = tokens[(start + i) % len(tokens)]
            try:
                async with session.post(url, data=token, headers={"Content-Type": "application/jwt"}) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                http_lat.append(time.perf_counter() - at)
            else:
                errors += 1

        poll_task = asyncio.create_task(poller()) if dsn else None
        tasks = []
        t_start = time.perf_counter() + 0.05
        for i in range(n):
            at = t_start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i % every == 0:
                scheduled[ids[(start + i) % len(ids)]] = at
            tasks.append(asyncio.create_task(send(i, at)))
        await asyncio.gather(*tasks)
        done_sending.set()
        if poll_task is not None:
            await poll_task
    cpu = sum(me.cpu_times()[:2]) - cpu0
    e2e_values = list(e2e.values()) + [float("inf")] * (len(scheduled) - len(e2e))  # unseen: worse than any
    return OpenLoopResult(rate, n, len(http_lat), _pct(http_lat, 0.5) * 1000, _pct(http_lat, 0.99) * 1000,
                          _pct(e2e_values, 0.5) * 1000, _pct(e2e_values, 0.99) * 1000, len(e2e),
                          (sum(poll_times) / len(poll_times) * 1000 + poll_interval * 1000) if poll_times else 0,
                          cpu, tracked=len(scheduled))
