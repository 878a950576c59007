"""A database engine created on first use and disposed on close.

The long-running roles keep their side tables (answer tallies, LTI nonces, hello-world checks, the
status page's figures, the notice ledger) behind one of these, so that a wrong or unreachable
``DATABASE_URL`` costs a failed query and a log line, never a process that will not start.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


class LazyEngine:
    __slots__ = ("_engine", "_options", "_url")

    def __init__(self, url: str, *, pool_size: int, max_overflow: int, pool_pre_ping: bool = True) -> None:
        self._url = url
        self._options = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_pre_ping": pool_pre_ping}
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_async_engine(self._url, **self._options)
        return self._engine

    async def dispose(self) -> None:
        """Close the pool (if there is one); the next use opens a new one."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()
