"""The worker's view of its own health: lag per partition, the database probe, and the stall rule.

Faust has a known failure where a consumer silently stops fetching (typically after a rebalance):
the process is up, its partitions have lag, and nothing is committed any more. Only a restart
heals it. So a worker whose partitions have lag and that has not committed a batch for
``WORKER_STALL_SECONDS`` while PostgreSQL answers exits with status :data:`EXIT_STALLED`, and the
restart policy (compose, Kubernetes) starts it again. A database outage is not a stall: the stall
clock restarts whenever the database does not answer or a write fails, so after an outage the
worker gets the full period to catch up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from canvas_stream.metrics import CONSUMER_LAG

log = structlog.get_logger(__name__)

EXIT_STALLED = 3


@dataclass
class StallClock:
    """When did the worker last show progress or a reason not to? (pure: the caller gives the time)"""

    stall_seconds: float
    started: float
    lagging_since: float | None = None
    last_commit: float | None = None
    last_excused: float | None = None  # database unavailable, writes failing, or lag unknown

    def observe(self, now: float, *, lag: int | None, database_ok: bool, last_commit: float | None) -> None:
        self.last_commit = last_commit
        if lag is None or not database_ok:
            self.last_excused = now
        if not lag:
            self.lagging_since = None
        elif self.lagging_since is None:
            self.lagging_since = now

    def stuck_for(self, now: float) -> float:
        """Seconds with lag and no commit and no excuse; 0 when there is no lag."""
        if self.lagging_since is None:
            return 0.0
        since = max(t for t in (self.started, self.lagging_since, self.last_commit, self.last_excused)
                    if t is not None)
        return max(0.0, now - since)

    def stalled(self, now: float) -> bool:
        return self.stuck_for(now) >= self.stall_seconds


async def partition_lags(app: Any, timeout: float = 5.0) -> dict[Any, int] | None:
    """Messages past the committed offset on each partition assigned to this worker (asks the
    broker for the end offsets); None when unknown (no consumer yet, broker unreachable)."""
    try:
        consumer = app.consumer
        assigned = list(consumer.assignment())
        if not assigned:
            return {}
        ends = await asyncio.wait_for(consumer.highwaters(*assigned), timeout=timeout)
        committed = consumer._committed_offset
        return {tp: max(0, (ends.get(tp) or 0) - (committed.get(tp) or 0)) for tp in assigned}
    except Exception:
        return None


class WorkerHealth:
    """Samples lag and the database, exports the lag gauges, and applies the stall rule."""

    def __init__(self, app: Any, sink: Any, database_ok: Callable[[], Awaitable[bool]], stall_seconds: float,
                 *, clock: Callable[[], float] = time.monotonic, exit: Callable[[int], None] = os._exit) -> None:
        self.app = app
        self.sink = sink
        self.database_ok = database_ok
        self.clock = StallClock(stall_seconds, started=clock())
        self._now = clock
        self._exit = exit
        self._labelled: set[tuple[str, str]] = set()
        self.lags: dict[Any, int] | None = None

    @property
    def lag(self) -> int | None:
        return None if self.lags is None else sum(self.lags.values())

    async def sample(self) -> dict[str, Any]:
        """One look at lag and the database; returns the /readyz detail."""
        lags, database = await asyncio.gather(partition_lags(self.app), self.database_ok())
        self.lags = lags
        self._export(lags)
        writes_ok = bool(self.sink.ready)
        now = self._now()
        self.clock.observe(now, lag=self.lag, database_ok=database and writes_ok,
                           last_commit=self.sink.last_commit_monotonic)
        last = self.sink.last_commit_monotonic
        return {
            "database": "ok" if database and writes_ok else "unavailable" if not database else "writes failing",
            "seconds_since_last_commit": None if last is None else round(now - last, 1),
            "lag": self.lag,
            "lag_by_partition": None if lags is None else {f"{tp.topic}/{tp.partition}": n
                                                          for tp, n in sorted(lags.items())},
            "stalled": self.clock.stalled(now),
        }

    def _export(self, lags: dict[Any, int] | None) -> None:
        if lags is None:
            return
        current = {(tp.topic, str(tp.partition)): n for tp, n in lags.items()}
        for labels in self._labelled - current.keys():  # partitions moved to another worker
            CONSUMER_LAG.remove(*labels)
        for labels, n in current.items():
            CONSUMER_LAG.labels(*labels).set(n)
        self._labelled = set(current)

    async def watch_once(self) -> None:
        """Sample; exit the process when stalled (lag, no commit, database answering)."""
        detail = await self.sample()
        now = self._now()
        if self.clock.stalled(now):
            log.error("worker stalled: partitions have lag and nothing was committed while the database answers; "
                      "exiting so that the restart policy restarts it", lag=detail["lag"],
                      stuck_seconds=round(self.clock.stuck_for(now), 1), exit_status=EXIT_STALLED)
            for handler in logging.getLogger().handlers:
                handler.flush()
            self._exit(EXIT_STALLED)  # not a graceful stop: the stuck batch must not be waited for
