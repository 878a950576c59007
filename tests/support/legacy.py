"""A warehouse as the previous release left it: schema ``canvas``, ids stored in the form events carried.

Built with the real migrations 0001-0004 run by ``canvas-stream migrate --revision 0004`` with the
schema setting at the previous release's value (``canvas``), then filled with the writer's own
upsert statement against the tables as they are at that revision (reflected, so columns later
revisions add are never named), from events normalized with ids kept as written.
"""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import MetaData, Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from processors.batch import prepare
from processors.warehouse import writer
from processors.warehouse.schema import LEGACY_SCHEMA
from tests.support import reference_writer  # the previous release's executemany statement
from tests.support.ids import AsWritten
from tests.support.procs import role_env

PREVIOUS_RELEASE = "0004"


def cli(database_url: str, *args: str, **env: str | None) -> str:
    """``canvas-stream ARGS`` in a child process with these settings (None: unset); returns its output."""
    environment = role_env(DATABASE_URL=database_url)
    for name, value in env.items():
        environment.pop(name, None)
        if value is not None:
            environment[name] = value
    result = subprocess.run([sys.executable, "-m", "canvas_stream.cli", *args],
                            env=environment, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def migrate(database_url: str, revision: str = "head", **env: str | None) -> str:
    """``canvas-stream migrate`` in a child process."""
    return cli(database_url, "migrate", "--revision", revision, **env)


def build_previous_release(database_url: str) -> None:
    migrate(database_url, PREVIOUS_RELEASE, WAREHOUSE_SCHEMA=LEGACY_SCHEMA, CANVAS_HOME_SHARD=None)


async def write_as_previous_release(engine: AsyncEngine, records: list[bytes]) -> None:
    """Normalize with ids as written and upsert into the previous release's tables, as its worker did."""
    batch = prepare(records, AsWritten())
    assert batch.quarantined() == []
    normalized = batch.normalized()
    async with engine.begin() as conn:
        metadata = MetaData()
        await conn.run_sync(lambda sync: metadata.reflect(sync, schema=LEGACY_SCHEMA))
        legacy: dict[str, Table] = {t.name: t for t in metadata.tables.values()}
        events = legacy["events"]
        rows = [{"event_id": e.event_id, "event_name": e.event_name, "format": e.format, "event_time": e.event_time,
                 "received_at": e.received_at, "user_id": e.user_id, "context_type": e.context_type,
                 "context_id": e.context_id, "payload": e.payload} for e in normalized.events]
        await conn.execute(insert(events).on_conflict_do_nothing(), rows)
        by_table: dict[str, list[dict]] = {}
        for change in writer.collapse(normalized.changes):
            table = legacy[change.table]
            values = dict.fromkeys(table.c.keys())
            values.update(change.key)
            values.update({k: v for k, v in change.fields.items() if k in table.c})
            values["field_versions"] = change.versions
            values["last_event_at"] = writer._version_time(max(change.versions.values())) if change.versions else None
            by_table.setdefault(change.table, []).append(values)
        for name, values in sorted(by_table.items()):
            await conn.execute(reference_writer._upsert_statement(legacy[name]), values)
