"""The analysts' read-only group role: created by the migrations when missing (NOLOGIN), USAGE and
SELECT on the warehouse schema (and on tables created later) and nothing else; a migrating user
who may not create roles gets a log line, and the migration goes on."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from canvas_stream.settings import async_database_url, plain_database_url
from processors.warehouse import tables
from tests.support import databases
from tests.support.legacy import migrate

S = tables.SCHEMA


def as_user(url: str, user: str, password: str | None = None) -> str:
    return plain_database_url(make_url(url).set(username=user, password=password)
                                       .render_as_string(hide_password=False))


async def admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(plain_database_url(url))


async def drop_database_and_roles(server_url: str, name: str, *roles: str) -> None:
    """What a test made on the server: its database, and its roles (cluster-wide, they outlive it)."""
    await databases.drop_database(server_url, name)
    conn = await admin(server_url)
    try:
        for role in roles:
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await conn.close()


async def test_a_login_granted_the_role_can_read_and_cannot_write(postgres_server_url):
    suffix = uuid.uuid4().hex[:10]
    group, alice, name = f"cs_analyst_{suffix}", f"cs_alice_{suffix}", f"cs_roles_{suffix}"
    url = await databases.create_database(postgres_server_url, name)
    try:
        await asyncio.to_thread(migrate, url, ANALYST_ROLE=group)
        conn = await admin(url)
        try:
            assert await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", group) is False
            await conn.execute(f"CREATE ROLE {alice} LOGIN PASSWORD 'secret-{suffix}'")
            await conn.execute(f"GRANT {group} TO {alice}")
            await conn.execute(f"INSERT INTO {S}.courses (id, name) VALUES (565, 'Linear Algebra')")
            await conn.execute(f"CREATE TABLE {S}.later_table (id bigint)")  # as a later migration would
            for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                assert not await conn.fetchval("SELECT has_table_privilege($1, $2, $3)", group, f"{S}.events",
                                               privilege)
            assert not await conn.fetchval("SELECT has_schema_privilege($1, $2, 'CREATE')", group, S)
        finally:
            await conn.close()

        reader = await asyncpg.connect(as_user(url, alice, f"secret-{suffix}"))
        try:
            assert await reader.fetchval(f"SELECT name FROM {S}.courses WHERE id = 565") == "Linear Algebra"
            assert await reader.fetchval(f"SELECT count(*) FROM {S}.current_grades") == 0  # views too
            assert await reader.fetchval(f"SELECT count(*) FROM {S}.later_table") == 0  # default privileges
            for statement in (f"INSERT INTO {S}.courses (id) VALUES (1)", f"UPDATE {S}.courses SET name = 'x'",
                              f"DELETE FROM {S}.events", f"CREATE TABLE {S}.mine (id int)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await reader.execute(statement)
        finally:
            await reader.close()
    finally:
        await drop_database_and_roles(postgres_server_url, name, alice, group)


async def test_a_migrating_user_who_may_not_create_roles_is_told_and_the_migration_goes_on(postgres_server_url):
    suffix = uuid.uuid4().hex[:10]
    migrator, group, name = f"cs_migrator_{suffix}", f"cs_nobody_{suffix}", f"cs_noroles_{suffix}"
    conn = await admin(postgres_server_url)
    try:
        await conn.execute(f"CREATE ROLE {migrator} LOGIN NOCREATEROLE NOSUPERUSER PASSWORD 'pw-{suffix}'")
        await conn.execute(f'CREATE DATABASE "{name}" OWNER {migrator}')
    finally:
        await conn.close()
    try:
        own_database = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
        url = async_database_url(as_user(own_database, migrator,
                                              f"pw-{suffix}"))
        output = await asyncio.to_thread(migrate, url, ANALYST_ROLE=group)
        assert "could not create the analysts' read-only group role" in output
        conn = await asyncpg.connect(plain_database_url(url))
        try:
            assert await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", group) == 0
            assert await conn.fetchval(f"SELECT count(*) FROM {S}.alembic_version") == 1  # migrated to the end
            assert await conn.fetchval(f"SELECT to_regclass('{S}.events') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await drop_database_and_roles(postgres_server_url, name, migrator)
