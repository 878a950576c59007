"""The ingress's side of the hello-world check (:mod:`canvas_stream.lti_handlers`): read the
subscriptions and hello-world receipts from PostgreSQL every ``every`` seconds, export the number
of overdue deployments as a gauge, and hand ``/readyz`` its detail and warnings.

Off the answer path like :mod:`ingest.answers`: an unreachable database only leaves the last
figures in place (and says so in the detail); it never changes the ingress's readiness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from canvas_stream.lazy_engine import LazyEngine
from canvas_stream.loop import cancel_and_wait
from canvas_stream.lti_handlers import OVERDUE, WAITING, HelloWorldCheck, read_hello_world_checks
from canvas_stream.metrics import LTI_HELLO_WORLD_OVERDUE

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class HelloWorldWatch:
    """Periodically reads the hello-world checks of every deployment."""

    def __init__(self, database_url: str, wait_seconds: float, *, every: float = 30.0, timeout: float = 5.0,
                 clock: Callable[[], datetime] = _now) -> None:
        self.wait_seconds = wait_seconds
        self.every = every
        self.timeout = timeout
        self._clock = clock
        self.checks: list[HelloWorldCheck] | None = None
        self.error: str | None = None
        self._db = LazyEngine(database_url, pool_size=1, max_overflow=0)
        self._task: asyncio.Task[None] | None = None
        self._logged: set[str] = set()

    async def refresh(self) -> list[HelloWorldCheck]:
        async with asyncio.timeout(self.timeout), self._db.engine.connect() as conn:
            self.checks = await read_hello_world_checks(conn)
        self.error = None
        LTI_HELLO_WORLD_OVERDUE.set(len(self.in_state(OVERDUE)))
        return self.checks

    def in_state(self, state: str) -> list[HelloWorldCheck]:
        now = self._clock()
        return [c for c in self.checks or () if c.state(now, self.wait_seconds) == state]

    def detail(self) -> dict[str, Any]:
        """The ``lti_hello_world`` part of /readyz."""
        now = self._clock()
        overdue = self.in_state(OVERDUE)
        LTI_HELLO_WORLD_OVERDUE.set(len(overdue))  # the gauge agrees with what /readyz says at this moment
        body: dict[str, Any] = {
            "overdue": [c.as_json(now, self.wait_seconds) for c in overdue],
            "waiting": [c.as_json(now, self.wait_seconds) for c in self.in_state(WAITING)],
            "wait_seconds": self.wait_seconds,
        }
        if self.checks is None or self.error is not None:
            body["unknown"] = f"not read from PostgreSQL yet: {self.error or 'starting'}"
        return body

    def warnings(self) -> list[str]:
        now = self._clock()
        return [f"LTI deployment {c.deployment_id}: hello world {c.describe(now, self.wait_seconds)}"
                for c in self.in_state(OVERDUE)]

    def _log_new_overdue(self) -> None:
        """Once per deployment that becomes overdue, not every round."""
        now = self._clock()
        overdue = {c.deployment_id: c for c in self.in_state(OVERDUE)}
        for deployment_id in overdue.keys() - self._logged:
            log.warning("no LtiHelloWorldNotice after subscribing the handler", deployment_id=deployment_id,
                        detail=overdue[deployment_id].describe(now, self.wait_seconds))
        self._logged = set(overdue)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.error is None:
                    log.warning("hello-world check: cannot read canvas_stream.lti_handler_subscriptions",
                                error=f"{exc.__class__.__name__}: {str(exc)[:200]}")
                self.error = exc.__class__.__name__
            else:
                self._log_new_overdue()
            await asyncio.sleep(self.every)

    async def start(self) -> None:
        LTI_HELLO_WORLD_OVERDUE.set(0)
        self._task = asyncio.create_task(self._run(), name="hello-world-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._db.dispose()
