"""Run Alembic from the installed package (no alembic.ini needed in the working directory)."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from canvas_stream.settings import (
    SettingError,
    async_database_url,
    configured_warehouse_schema,
    mask_url,
    plain_database_url,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# migrations/env.py keeps Alembic's version table in the warehouse schema (WAREHOUSE_SCHEMA).
VERSION_TABLE = f"{configured_warehouse_schema()}.alembic_version"
CONNECT_TIMEOUT_SECONDS = 10.0


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def connect_problem(exc: BaseException, timeout: float) -> str:
    """What went wrong connecting, in words (never the password: asyncpg does not echo it)."""
    chain = [exc]
    while chain[-1].__cause__ is not None:  # SQLAlchemy and aiohttp wrap the error that says it best
        chain.append(chain[-1].__cause__)
    for error in chain:
        if isinstance(error, TimeoutError):
            return f"no answer within {timeout:g} s"
        if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
    deepest = chain[-1]
    if isinstance(deepest, OSError) and deepest.strerror:
        return deepest.strerror.lower()
    text = str(deepest).strip()
    return text.splitlines()[0][:200] if text else type(deepest).__name__


async def _select_one(database_url: str, timeout: float) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(async_database_url(database_url), connect_args={"timeout": timeout})
    try:
        async with asyncio.timeout(timeout + 1), engine.connect() as conn:
            await conn.execute(text("select 1"))
    finally:
        await engine.dispose()


def check_connection(database_url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Raise SettingError naming DATABASE_URL when the database cannot be reached (sync code only)."""
    try:
        asyncio.run(_select_one(database_url, timeout))
    except Exception as exc:
        where = mask_url(plain_database_url(database_url))
        raise SettingError("DATABASE_URL", f"cannot connect to {where}: {connect_problem(exc, timeout)}") from None


def head_revisions() -> tuple[str, ...]:
    """The revision(s) the code expects (``alembic heads``)."""
    return tuple(ScriptDirectory.from_config(alembic_config("postgresql://unused/")).get_heads())


def upgrade(database_url: str, revision: str = "head") -> None:
    """alembic upgrade head; runs in its own event loop, so call it from sync code.

    The database is probed first (bounded) so that a wrong URL fails in one line, not a traceback.
    """
    check_connection(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
