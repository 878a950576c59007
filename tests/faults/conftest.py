"""Fixtures of the fault suite: a JWKS the ingress processes trust, a clean warehouse, a fresh
topic, a broker or a PostgreSQL of a test's own (to stop, pause or restart), and a registry that
stops every process a test started (even when the test fails). Every test here is marked slow."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pytest

from canvas_stream import migrate
from canvas_stream.embedded.broker import EmbeddedKafka
from canvas_stream.embedded.database import EmbeddedPostgres
from canvas_stream.embedded.process import free_port
from tests.faults.harness import KID, PARTITIONS, Processes, send_signal
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.topics import created_topic

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
async def jwks():
    async with JwksServer([jwk_for(rsa_key(KID), KID)]) as server:
        yield server


@pytest.fixture
async def warehouse(engine, migrated_database_url) -> str:
    """URL of the session database, its warehouse tables emptied."""
    return migrated_database_url


@pytest.fixture
async def topic(kafka_bootstrap, unique_topic) -> str:
    return await created_topic(kafka_bootstrap, f"{unique_topic}faults", PARTITIONS)


@pytest.fixture
async def own_broker():
    """A broker of the test's own on a free port (tansu, memory storage: a restart empties it)."""
    kafka = EmbeddedKafka(port=free_port())
    await asyncio.to_thread(kafka.start)
    try:
        yield kafka
    finally:
        if kafka.pid is not None:  # never leave it paused: stop() must be able to end it
            send_signal(kafka.pid, signal.SIGCONT)
        await asyncio.to_thread(kafka.stop)


@pytest.fixture
async def own_postgres(server_dir):
    """A migrated PostgreSQL of the test's own (persistent data dir, fixed port), so stopping it
    leaves the session database alone."""
    pg = EmbeddedPostgres(server_dir / "pgdata", port=free_port())
    await asyncio.to_thread(pg.start)
    try:
        await asyncio.to_thread(migrate.upgrade, pg.url)
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)


@pytest.fixture
async def processes():
    """Roles registered here are stopped (SIGTERM, then SIGKILL) at teardown, newest first."""
    started = Processes()
    yield started
    for role in reversed(started):
        with contextlib.suppress(Exception):
            await asyncio.to_thread(role.stop, 10.0)
