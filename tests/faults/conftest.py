"""Fixtures of the fault suite: a JWKS the ingress processes trust, a clean warehouse, a fresh
topic, and a registry that stops every process a test started (even when the test fails)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ingest.publish import ensure_topic
from tests.faults.harness import KID, PARTITIONS
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import Role


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
    name = f"{unique_topic}faults"
    await ensure_topic(kafka_bootstrap, name, PARTITIONS)
    return name


@pytest.fixture
async def processes():
    """Roles registered here are stopped (SIGTERM, then SIGKILL) at teardown, newest first."""
    started: list[Role] = []
    yield started
    for role in reversed(started):
        with contextlib.suppress(Exception):
            await asyncio.to_thread(role.stop, 10.0)
