"""Alembic owns the schema: the migrations must build exactly the tables the code defines."""

from __future__ import annotations

import asyncio
import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream import migrate
from processors.warehouse.partitions import is_partition_name
from processors.warehouse.tables import SCHEMA, metadata
from tests.support.databases import create_database, drop_database


def _diff(connection) -> list:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, parent: (
                name == SCHEMA if type_ == "schema" else not (type_ == "table" and is_partition_name(name))),
            "compare_type": True,
            "version_table_schema": SCHEMA,
        },
    )
    return [d for d in compare_metadata(context, metadata) if not _is_version_table(d)]


def _is_version_table(diff) -> bool:
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == "alembic_version"


async def test_migrations_match_the_table_definitions_and_downgrade_cleanly(postgres_server_url):
    name = f"cs_migr_{uuid.uuid4().hex[:10]}"
    url = await create_database(postgres_server_url, name)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                diff = await conn.run_sync(_diff)
                assert diff == [], f"models and migrations differ: {diff}"
                comment = (await conn.execute(text(f"select obj_description('{SCHEMA}.events'::regclass)"))).scalar()
                assert comment and "distinct event" in comment
            await asyncio.to_thread(migrate.downgrade, url, "base")
            async with engine.connect() as conn:
                left = (await conn.execute(text(
                    f"select count(*) from information_schema.tables where table_schema = '{SCHEMA}' "
                    "and table_name <> 'alembic_version'"))).scalar()
                assert left == 0
            await asyncio.to_thread(migrate.upgrade, url)  # and up again
        finally:
            await engine.dispose()
    finally:
        await drop_database(postgres_server_url, name)
