"""Fixtures for tests that need a migrated warehouse on the session's real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from canvas_stream import migrate
from processors.warehouse import tables


@pytest.fixture(scope="session")
async def _migrated(database_url: str) -> str:
    """The session database with ``alembic upgrade head`` applied (in a thread: alembic runs its own loop)."""
    await asyncio.to_thread(migrate.upgrade, database_url)
    return database_url


@pytest.fixture
async def engine(_migrated: str) -> AsyncEngine:
    """An engine on a warehouse emptied before each test."""
    eng = create_async_engine(_migrated, pool_size=2)
    async with eng.begin() as conn:
        names = ", ".join(f"{tables.SCHEMA}.{t.name}" for t in tables.metadata.sorted_tables)
        await conn.execute(text(f"TRUNCATE {names}"))
    yield eng
    await eng.dispose()
