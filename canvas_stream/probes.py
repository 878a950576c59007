"""Readiness probes that ask the real dependency, with a bound on time and a short cache.

Why: a readiness detail must say what is true now (a hung broker or a stopped database must show
``unavailable``), yet a load balancer polling every second must not turn into a flood of requests
against a dependency that is already struggling. So each probe has a timeout, concurrent callers
share one in-flight check, and an answer is reused for ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


class CachedProbe:
    """``await probe()`` -> True when ``check`` returned truthy within ``timeout`` (cached ``ttl`` s)."""

    def __init__(self, check: Callable[[], Awaitable[object]], *, timeout: float, ttl: float = 1.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self.timeout = timeout
        self.ttl = ttl
        self._clock = clock
        self._value = False
        self._at: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self.last_error: str | None = None

    async def __call__(self) -> bool:
        if self._at is not None and self._clock() - self._at < self.ttl:
            return self._value
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._run())
        return await asyncio.shield(self._inflight)  # one cancelled caller does not cancel the others' probe

    async def _run(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                ok = bool(await self._check())
            self.last_error = None if ok else "check failed"
        except TimeoutError:
            ok, self.last_error = False, f"no answer within {self.timeout:g} s"
        except Exception as exc:
            ok, self.last_error = False, f"{exc.__class__.__name__}: {str(exc)[:200]}"
        finally:
            self._inflight = None
        self._value, self._at = ok, self._clock()
        return ok


def database_probe(engine: AsyncEngine, *, timeout: float = 2.0, ttl: float = 1.5) -> CachedProbe:
    """``SELECT 1`` on its own connection: true only when PostgreSQL answers now."""

    async def select_one() -> bool:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT 1"))).scalar() == 1

    return CachedProbe(select_one, timeout=timeout, ttl=ttl)
