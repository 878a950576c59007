"""PostgreSQL helpers only the tests and benchmarks need: wait for a server, create and drop a
database of their own on it. URLs may be given in SQLAlchemy (``postgresql+asyncpg://``) or libpq form."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from sqlalchemy.engine import make_url

from canvas_stream.embedded.process import ServiceError
from canvas_stream.settings import async_database_url, mask_url, plain_database_url

__all__ = ["create_database", "drop_database", "wait_for_postgres"]


async def wait_for_postgres(url: str, timeout: float = 30.0) -> None:
    """Wait until the database at ``url`` answers ``SELECT 1``."""
    dsn = plain_database_url(url)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=max(1.0, min(5.0, deadline - time.monotonic())))
            try:
                if await conn.fetchval("SELECT 1") == 1:
                    return
            finally:
                await conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise ServiceError(f"PostgreSQL at {mask_url(url)} not ready within {timeout}s: {last!r}")
        await asyncio.sleep(0.2)


async def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url`` if absent; return the ``postgresql+asyncpg://``
    URL of it. Connects to the database named in ``url`` to run ``CREATE DATABASE``."""
    conn = await asyncpg.connect(plain_database_url(url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            quoted = name.replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{quoted}"')
    finally:
        await conn.close()
    return async_database_url(make_url(url).set(database=name).render_as_string(hide_password=False))


async def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``url`` (closing its sessions first); ``url`` must
    name another database on the same server (the connection for ``DROP DATABASE``)."""
    conn = await asyncpg.connect(plain_database_url(url))
    try:
        quoted = name.replace('"', '""')
        await conn.execute(f'DROP DATABASE IF EXISTS "{quoted}" WITH (FORCE)')
    finally:
        await conn.close()
