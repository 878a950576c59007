"""Migration 0012 upgrades an existing warehouse in place: its rows stay, ``erasures`` and
``erased_users`` appear with the person-related column comments, an erasure runs on the upgraded
warehouse, and a downgrade removes only what 0012 added."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from sqlalchemy import text

from canvas_stream import migrate
from canvas_stream.settings import Settings
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.privacy.erasure import ErasureRequest, erase
from processors.privacy.guard import ErasureGuard
from processors.sink import WarehouseSink
from processors.warehouse.schema import SCHEMA
from tests.support.people import scenarios, someone
from tests.support.warehouse import warehouse_at

S = SCHEMA

PREVIOUS = "0010"  # the revision 0012 follows


async def _comment(conn, table: str, column: str) -> str | None:
    return (await conn.execute(text(
        "SELECT col_description(c.oid, a.attnum) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid WHERE n.nspname = :s AND c.relname = :t AND a.attname = :c"),
        {"s": S, "t": table, "c": column})).scalar()


async def test_0012_adds_the_erasure_tables_in_place(postgres_server_url):
    async with warehouse_at(postgres_server_url, PREVIOUS) as (url, engine):
        p, others = someone(7_770_001, "m12"), [someone(60_000_000 + i, "m12o") for i in range(3)]
        messages = scenarios(p, others, datetime.now(UTC).replace(microsecond=0), 0, 12)
        chosen = [messages[n] for n in ("enrollment", "graded", "grades_others", "lti_notice")]
        # Events as a 0010 warehouse holds them, in plain SQL (today's writer may follow a later key).
        events = prepare(chosen, IdPolicy()).normalized().events
        async with engine.begin() as conn:
            for e in events:
                await conn.execute(text(
                    f"INSERT INTO {S}.events (event_id, event_name, format, event_time, received_at, user_id, "
                    "context_type, payload, happening_id, arrival) VALUES (:id, :name, :format, :time, :received, "
                    ":user, :ctype, CAST(:payload AS jsonb), :happening, CAST(:arrival AS jsonb))"),
                    {"id": e.event_id, "name": e.event_name, "format": e.format, "time": e.event_time,
                     "received": e.received_at, "user": e.user_id, "ctype": e.context_type,
                     "payload": json.dumps(e.payload), "happening": e.happening_id or e.event_id,
                     "arrival": json.dumps(e.arrival)})
        async with engine.connect() as conn:
            before = (await conn.execute(text(f"SELECT count(*) FROM {S}.events"))).scalar_one()
            assert (await conn.execute(text(f"SELECT to_regclass('{S}.erasures')"))).scalar_one() is None
        await asyncio.to_thread(migrate.upgrade, url, "0012")

        async with engine.connect() as conn:
            assert (await conn.execute(text(f"SELECT count(*) FROM {S}.events"))).scalar_one() == before == 4
            assert "profile page" in await _comment(conn, "asset_accesses", "asset_id")
            assert "erasing a person" in await _comment(conn, "lti_notices", "jwt")
            described = (await conn.execute(text(f"SELECT obj_description('{S}.erased_users'::regclass)"))).scalar()
            assert "Suppression list" in described
            readable = text("SELECT has_table_privilege(:role, :table, 'SELECT')")
            role = Settings().analyst_role
            assert (await conn.execute(readable, {"role": role, "table": f"{S}.erasures"})).scalar_one()
            assert not (await conn.execute(readable, {"role": role, "table": f"{S}.erased_users"})).scalar_one()
        report = await erase(engine, ErasureRequest(p.global_id, "dpo 12"))
        assert report.rows["events"]["deleted"] >= 2 and report.rows["events"]["redacted"] >= 1
        # a worker's sink with the guard writes on the upgraded warehouse (its first transaction loads the list)
        sink = WarehouseSink(engine, guard=ErasureGuard())
        await sink.write(prepare([messages["graded"]], IdPolicy()))
        assert sink.guard is not None and sink.guard.counts["dropped"] == 1
        async with engine.connect() as conn:
            assert (await conn.execute(text(f"SELECT count(*) FROM {S}.erased_users"))).scalar_one() == 1

        await asyncio.to_thread(migrate.downgrade, url, PREVIOUS)
        async with engine.connect() as conn:
            for table in ("erasures", "erased_users"):
                assert (await conn.execute(text(f"SELECT to_regclass('{S}.{table}')"))).scalar_one() is None
            assert await _comment(conn, "asset_accesses", "asset_id") is None
            assert await _comment(conn, "lti_notices", "jwt") == ("The compact JWS as received (re-verifiable "
                                                                  "while the platform key lives).")
            assert (await conn.execute(text(f"SELECT count(*) FROM {S}.events"))).scalar_one() >= 2
