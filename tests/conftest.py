"""Session fixtures for real Kafka and PostgreSQL.

``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` in the environment point the tests at existing servers;
otherwise an embedded tansu broker / embedded PostgreSQL is started for the session. Every session
gets its own freshly created database (``cs_test_<random>``), dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream import migrate
from canvas_stream.embedded.broker import EmbeddedKafka
from canvas_stream.embedded.database import EmbeddedPostgres
from canvas_stream.settings import async_database_url
from tests.support.databases import create_database, drop_database, wait_for_postgres
from tests.support.topics import created_topic
from tests.support.warehouse import empty_tables


@pytest.fixture(scope="session", autouse=True)
def _remove_worker_data_dirs() -> Iterator[None]:
    """faust creates ``<consumer group>-data`` in the working directory even with the memory store;
    the tests' consumer groups start with ``t-``: what this session's workers left is removed."""
    before = set(Path.cwd().glob("t-*-data"))
    yield
    for path in set(Path.cwd().glob("t-*-data")) - before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a Kafka-compatible broker for the whole session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if env:
        yield env
        return
    with EmbeddedKafka() as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """``postgresql+asyncpg://`` URL of the session's PostgreSQL server (its default database)."""
    env = os.environ.get("DATABASE_URL", "").strip()
    if env:
        yield async_database_url(env)
        return
    with EmbeddedPostgres() as pg:
        yield pg.url


@pytest_asyncio.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """``postgresql+asyncpg://`` URL of a database created for this test session only."""
    await wait_for_postgres(postgres_server_url, timeout=60)
    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(postgres_server_url, name)
    try:
        yield url
    finally:
        await drop_database(postgres_server_url, name)


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """Endpoint URL of a real SQS-protocol server (moto in server mode on loopback) for the session."""
    from tests.support.sqs import moto_sqs_server

    with moto_sqs_server() as endpoint:
        yield endpoint


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic-name prefix (legal Kafka characters), e.g. ``t-test_x-1a2b3c4d-``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", request.node.name)[:60]
    return f"t-{stem}-{uuid.uuid4().hex[:8]}-"


@pytest_asyncio.fixture
async def topic(kafka_bootstrap: str, unique_topic: str) -> str:
    """A fresh topic of 3 partitions, created (the fault suite's has more)."""
    return await created_topic(kafka_bootstrap, f"{unique_topic}topic")


@pytest_asyncio.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    """The session database with ``alembic upgrade head`` applied (in a thread: alembic runs its own loop)."""
    await asyncio.to_thread(migrate.upgrade, database_url)
    return database_url


@pytest_asyncio.fixture
async def engine(migrated_database_url: str):
    """An async engine on the migrated warehouse, emptied before each test."""
    eng = create_async_engine(migrated_database_url, pool_size=2)
    async with eng.begin() as conn:
        await empty_tables(conn)
    yield eng
    await eng.dispose()


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A private directory for an embedded server's data, outside pytest's ``tmp_path``.

    When running as root the embedded PostgreSQL runs as another user, which needs to traverse the
    directory's ancestors; pytest resets ``/tmp/pytest-of-<user>`` to 0700 at every session start,
    so a concurrent pytest session would lock the server out of a ``tmp_path``.
    """
    path = Path(tempfile.mkdtemp(prefix="canvas-stream-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(autouse=True)
async def _dump_tasks_when_stuck(request: pytest.FixtureRequest):
    """Print every asyncio task's stack if a test runs for more than 2 minutes (diagnoses hangs in CI)."""
    def dump() -> None:
        print(f"\n=== {request.node.nodeid} still running after 120 s; asyncio tasks:", file=sys.__stderr__)
        for task in asyncio.all_tasks():
            task.print_stack(limit=12, file=sys.__stderr__)

    handle = asyncio.get_running_loop().call_later(120, dump)
    yield
    handle.cancel()
