"""Alembic environment: the warehouse tables (declared in ``processors.warehouse.schema``, built by
``processors.warehouse.tables``) are the target that autogenerate compares migrations with.

Everything, Alembic's version table included, lives in the configured schema (``WAREHOUSE_SCHEMA``).
Before Alembic reads its version table, a previous release's warehouse (schema ``canvas``, where
Canvas Data 2 puts its own tables) is moved there (``migrations/relocate.py``).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream.settings import async_database_url
from migrations.relocate import relocate_previous_release
from processors.warehouse.partitions import is_partition_name
from processors.warehouse.schema import SCHEMA
from processors.warehouse.tables import metadata

config = context.config
target_metadata = metadata


def _include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    if type_ == "schema":
        return name == SCHEMA
    if type_ == "table":  # monthly partitions are maintenance's business, not the table definitions'
        return not is_partition_name(name)
    return True


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=_include_name,
        version_table_schema=SCHEMA,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection) -> None:
    revisions = {script.revision for script in context.script.walk_revisions()}
    relocate_previous_release(connection, revisions)
    connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    connection.commit()  # Alembic owns the transactions from here (autocommit_block needs that)
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = async_database_url(config.get_main_option("sqlalchemy.url"))
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
