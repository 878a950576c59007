"""Every answer the ingress gives, measured once: the latency histogram and Canvas's 24-hour budget.

``answers_middleware`` times each request and labels it with its route template and status code.
Answers on the routes Canvas delivers to also go to an :class:`AnswerLedger`, which upserts this
replica's per-minute tallies into ``canvas_stream.ingress_answers`` every few seconds and reads the
24-hour sums over all replicas back (for the gauges, ``/readyz`` and the status page). The
database is never on the answer path: an unreachable database only delays the figures. The same
middleware runs Canvas's response deadline (:class:`ingest.deadline.ResponseDeadline`), so its 503s
are timed and counted like every other answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy import text

from canvas_stream.lazy_engine import LazyEngine
from canvas_stream.loop import cancel_and_wait
from canvas_stream.metrics import (
    CANVAS_ANSWERS_24H,
    CANVAS_ANSWERS_UPDATED,
    CANVAS_DEACTIVATION_THRESHOLD,
    INGRESS_REQUEST_DURATION,
)
from canvas_stream.settings import warehouse_sql
from ingest.budget import COUNTED_ROUTES, ERROR, FOREIGN_TENANT, THRESHOLDS, TIMEOUT, Budget, Tally, budget_from_rows
from ingest.deadline import ResponseDeadline

log = structlog.get_logger(__name__)

UNMATCHED_ROUTE = "unmatched"  # 404s: never the raw path (unbounded label values)
CLIENT_GONE = 499  # the client closed the connection before the answer (nginx's convention)

BUDGET_SQL = text(warehouse_sql("""
    SELECT route,
           coalesce(sum(slow) FILTER (WHERE code <> 403), 0) AS timeouts,
           coalesce(sum(answers - slow) FILTER (WHERE code <> 403 AND code NOT BETWEEN 200 AND 299), 0) AS errors,
           coalesce(sum(answers) FILTER (WHERE code = 403), 0) AS foreign_tenant
    FROM {schema}.ingress_answers
    WHERE minute > now() - interval '24 hours'
    GROUP BY route
"""))

# Plain SQL: the ingress does not import the warehouse's table definitions (schema.py declares the table).
UPSERT_SQL = text(warehouse_sql("""
    INSERT INTO {schema}.ingress_answers (minute, route, replica, code, answers, slow)
    VALUES (:minute, :route, :replica, :code, :answers, :slow)
    ON CONFLICT (minute, route, replica, code) DO UPDATE SET answers = excluded.answers, slow = excluded.slow
"""))

for _kind, _threshold in THRESHOLDS.items():
    CANVAS_DEACTIVATION_THRESHOLD.labels(_kind).set(_threshold)


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def replica_name() -> str:
    """host:pid:start: unique per process, so absolute per-replica counts never overwrite each other."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{int(time.time())}"


class AnswerLedger:
    """This replica's answer tallies, flushed to PostgreSQL; the 24-hour budget of all replicas."""

    def __init__(self, database_url: str, *, flush_every: float = 5.0, timeout: float = 5.0,
                 replica: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self._db = LazyEngine(database_url, pool_size=1, max_overflow=1)
        self.flush_every = flush_every
        self.timeout = timeout
        self.replica = replica or replica_name()
        self._clock = clock
        self.tally = Tally()
        self.budget: Budget | None = None
        self.budget_read_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def record(self, route: str, code: int, seconds: float) -> None:
        self.tally.record(route, code, seconds, self._clock())

    async def flush(self) -> int:
        """Upsert the changed tallies (absolute counts, so a repeated flush is harmless)."""
        rows = self.tally.take_dirty()
        if not rows:
            return 0
        values = [{"minute": datetime.fromtimestamp(minute, UTC), "route": route, "replica": self.replica,
                   "code": code, "answers": c.answers, "slow": c.slow} for (minute, route, code), c in rows]
        try:
            async with asyncio.timeout(self.timeout), self._db.engine.begin() as conn:
                await conn.execute(UPSERT_SQL, values)
        except BaseException:
            self.tally.mark_dirty(key for key, _ in rows)
            raise
        self.tally.forget_before(int(self._clock() // 60) * 60 - 120)
        return len(rows)

    async def read_budget(self) -> Budget:
        """The last 24 hours over every replica; also sets the Prometheus gauges."""
        async with asyncio.timeout(self.timeout), self._db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(BUDGET_SQL)]
        budget = budget_from_rows(rows)
        for r in budget.routes:
            CANVAS_ANSWERS_24H.labels(r.route, TIMEOUT).set(r.timeouts)
            CANVAS_ANSWERS_24H.labels(r.route, ERROR).set(r.errors)
            CANVAS_ANSWERS_24H.labels(r.route, FOREIGN_TENANT).set(r.foreign_tenant)
        self.budget, self.budget_read_at = budget, self._clock()
        CANVAS_ANSWERS_UPDATED.set(self.budget_read_at)
        return budget

    async def _run(self) -> None:
        while True:
            try:
                await self.flush()
                await self.read_budget()
                if self._failing:
                    log.info("answer ledger: PostgreSQL reachable again")
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:  # once per outage, not every few seconds
                    log.warning("answer ledger: cannot reach canvas_stream.ingress_answers; keeping counts in memory",
                                error=f"{exc.__class__.__name__}: {str(exc)[:200]}")
                self._failing = True
            await asyncio.sleep(self.flush_every)

    async def start(self) -> None:
        for route in COUNTED_ROUTES:  # a zero is a figure; no series is "no data"
            for kind in (TIMEOUT, ERROR, FOREIGN_TENANT):
                CANVAS_ANSWERS_24H.labels(route, kind)
        self._task = asyncio.create_task(self._run(), name="answer-ledger")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.flush()  # the last few seconds' answers
        await self._db.dispose()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answers_middleware(ledger: AnswerLedger | None, deadline: ResponseDeadline) -> Any:
    """Time every answer (histogram by route template and code); tally Canvas's routes in ``ledger``.

    The routes of ``deadline`` are also answered 503 when the handler runs past it (run here, not in
    a middleware of its own: each layer is a coroutine and a call per request).
    """

    durations: dict[tuple[str, int], Any] = {}  # the histogram's child per (route, code), looked up once

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        code = 500
        route = route_template(request)
        try:
            timeout = deadline.arm(request, route)
            if timeout is None:
                response = await handler(request)
            else:
                try:
                    with timeout:
                        response = await handler(request)
                except TimeoutError:
                    if not timeout.expired():
                        raise  # some other timeout the handler did not handle: not ours to rename
                    response = deadline.exceeded(route)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = CLIENT_GONE
            raise
        finally:
            seconds = time.perf_counter() - started
            child = durations.get((route, code))
            if child is None:
                child = durations[(route, code)] = INGRESS_REQUEST_DURATION.labels(route, str(code))
            child.observe(seconds)
            if ledger is not None and route in COUNTED_ROUTES:
                ledger.record(route, code, seconds)

    return middleware
