"""PostgreSQL backend CPU per event of the worker's writes: first delivery and redelivery.

    .venv/bin/python -m benchmarks.pg_write [--events 6000] [--batch 1000] [--runs 1]

Each run creates a fresh database, migrates it to head, and writes the pool's signed events
(as the benchmark's ``Bench.records`` builds them) through ``WarehouseSink`` with the erasure
guard, as a worker does, in batches of ``--batch``; then the same batches again (a redelivery).
Other events are written first (``--warm-up``, not measured): a worker's connection is long-lived,
so the per-connection costs (catalog caches, statement preparation) are not per-event costs.
The writing connection is the only one in the engine's pool; its backend's user+system CPU
(psutil) is read before and after each pass. Normalization runs before the measured pass, so
only PostgreSQL's work is counted (and, for reference, this process's CPU while it writes: the
worker's share of the writes). Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Iterator

import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream import migrate
from canvas_stream.settings import async_database_url
from processors.batch import PreparedBatch, prepare
from processors.normalize.ids import IdPolicy
from processors.privacy.guard import ErasureGuard
from processors.sink import WarehouseSink
from tests.support.databases import create_database, drop_database


def server_url() -> str:
    env = os.environ.get("DATABASE_URL", "").strip()
    return async_database_url(env or "postgresql://postgres@127.0.0.1:5432/postgres")


def records(n: int) -> list[bytes]:
    """The pool's first ``n`` events as the ingress publishes them (``Bench.records``)."""
    from canvas_stream.records import Verification
    from ingest.live_events import build_record

    from . import limits
    from .pool import ISSUER, build_pool

    pool = build_pool(24_000, log=lambda m: None)
    out = []
    for i in range(min(n, len(pool))):
        _key, rec = build_record(pool.claims(i), Verification(True, "bench-2048", ISSUER, limits.now()),
                                 pool.claims_json(i))
        out.append(rec.to_bytes())
    return out


def batches(messages: list[bytes], size: int) -> list[PreparedBatch]:
    return [prepare(messages[i:i + size], IdPolicy()) for i in range(0, len(messages), size)]


def _cpu(pid: int) -> float:
    """CPU seconds of a process: the scheduler's nanosecond count where Linux has it, else psutil's ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system


@contextlib.contextmanager
def _breakdown(pid: int, totals: dict[str, float]) -> Iterator[None]:
    """Attribute backend CPU to each statement (by its target table) inside the ``with``; the
    driver call is restored after it (patched per pass, it used to wrap its own earlier patch)."""
    from sqlalchemy.ext.asyncio import AsyncConnection

    original = AsyncConnection.exec_driver_sql

    async def measured(self, statement, *args, **kwargs):
        before = _cpu(pid)
        try:
            return await original(self, statement, *args, **kwargs)
        finally:
            words = statement.split()
            target = words[2] if words[:2] == ["INSERT", "INTO"] else " ".join(words[:3])
            totals[target] = totals.get(target, 0.0) + _cpu(pid) - before

    AsyncConnection.exec_driver_sql = measured  # type: ignore[method-assign]
    try:
        yield
    finally:
        AsyncConnection.exec_driver_sql = original  # type: ignore[method-assign]


async def create_icu_database(name: str, icu_locale: str) -> str:
    """A database whose text comparisons use ICU's ``icu_locale`` (as a non-C default collation would)."""
    import asyncpg

    from canvas_stream.settings import plain_database_url

    conn = await asyncpg.connect(plain_database_url(server_url()))
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu "
                           f"ICU_LOCALE '{icu_locale}' LOCALE 'C.UTF-8'")
    finally:
        await conn.close()
    return await create_database(server_url(), name)  # exists: only its URL


async def one_run(messages: list[bytes], warm_up: list[bytes], size: int, breakdown: bool = False,
                  settings: dict[str, str] | None = None, icu_locale: str | None = None) -> tuple[float, float]:
    """Backend CPU us/event of the first delivery and of the redelivery, on a fresh database."""
    name = f"cs_pgw_{uuid.uuid4().hex[:10]}"
    url = await (create_icu_database(name, icu_locale) if icu_locale else create_database(server_url(), name))
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        engine = create_async_engine(url, pool_size=1, max_overflow=0,
                                     connect_args={"server_settings": settings or {}})
        try:
            sink = WarehouseSink(engine, guard=ErasureGuard())
            async with engine.connect() as conn:
                pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            for batch in batches(warm_up, size):  # caches and prepared statements, as in a running worker
                await sink.write(batch)
            figures: list[float] = []
            clients: list[float] = []
            for delivery in ("first", "redelivery"):
                prepared = batches(messages, size)
                totals: dict[str, float] = {}
                before, client_before = _cpu(pid), time.process_time()
                with _breakdown(pid, totals) if breakdown else contextlib.nullcontext():
                    for batch in prepared:
                        await sink.write(batch)
                figures.append((_cpu(pid) - before) * 1e6 / len(messages))
                clients.append((time.process_time() - client_before) * 1e6 / len(messages))
                for target, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
                    print(f"  {delivery} {target}: {seconds * 1e6 / len(messages):.1f} us/event")
            print(f"  writer's own process (sink, SQLAlchemy, asyncpg): first {clients[0]:.1f} "
                  f"redelivery {clients[1]:.1f} us/event")
            return figures[0], figures[1]
        finally:
            await engine.dispose()
    finally:
        await drop_database(server_url(), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=1000,
                        help="events per transaction (the worker's WORKER_BATCH_SIZE is 2,000 since "
                             "2026-12-03; 1,000 as docs/performance.md measured)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warm-up", type=int, default=2000, help="other events written first, not measured")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a session setting")
    parser.add_argument("--icu-locale", help="create the database with this ICU collation (e.g. en-US)")
    parser.add_argument("--breakdown", action="store_true", help="backend CPU per statement (one run)")
    args = parser.parse_args(argv)
    everything = records(args.events + args.warm_up)
    messages, warm_up = everything[:args.events], everything[args.events:]
    settings = dict(item.split("=", 1) for item in args.set)
    firsts, seconds = [], []
    for _ in range(args.runs):
        first, second = asyncio.run(one_run(messages, warm_up, args.batch, args.breakdown, settings,
                                               args.icu_locale))
        firsts.append(first)
        seconds.append(second)
        print(f"first {first:.1f} redelivery {second:.1f} us/event", flush=True)
    print(f"median first {statistics.median(firsts):.1f} redelivery {statistics.median(seconds):.1f} us/event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
