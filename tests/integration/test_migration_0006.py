"""Migration 0006 upgrades a warehouse that already holds events in place: the two new columns of
canvas_stream.events appear, root_account_uuid is backfilled from the stored payloads, nothing else changes."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from canvas_stream import migrate
from canvas_stream.settings import plain_database_url
from tests.support.warehouse import warehouse_at

CANVAS = {"metadata": {"event_name": "course_created", "root_account_uuid": "CanvasFormatAccount"}, "body": {}}
CALIPER = {"sensor": "s", "data": [{"id": "urn:uuid:1", "type": "SessionEvent", "action": "LoggedIn",
                                    "actor": {"id": "urn:instructure:canvas:user:1", "extensions": {
                                        "com.instructure.canvas": {"root_account_uuid": "CaliperActorAccount"}}}}]}
CALIPER_NO_ACCOUNT = {"sensor": "s", "data": [{"id": "urn:uuid:2", "type": "NavigationEvent"}]}
NOTICE = {"https://purl.imsglobal.org/spec/lti/claim/notice": {"id": "n1"}, "root_account_uuid": "not-an-event-field"}


async def test_0006_adds_the_columns_in_place_and_backfills_the_root_account(postgres_server_url):
    async with warehouse_at(postgres_server_url, "0005") as (url, _):
        conn = await asyncpg.connect(plain_database_url(url))
        try:
            rows = [("e-canvas", "canvas", CANVAS), ("e-caliper", "caliper", CALIPER),
                    ("e-caliper-none", "caliper", CALIPER_NO_ACCOUNT), ("e-notice", "lti_notice", NOTICE)]
            await conn.executemany(
                "insert into canvas_stream.events (event_id, event_name, format, received_at, payload) "
                "values ($1, 'x', $2, '2024-01-01T00:00:00Z', $3::jsonb)",
                [(i, f, json.dumps(p)) for i, f, p in rows])
            await asyncio.to_thread(migrate.upgrade, url)
            got = {r["event_id"]: (r["subscription"], r["root_account_uuid"], json.loads(r["payload"]))
                   for r in await conn.fetch("select event_id, subscription, root_account_uuid, payload "
                                             "from canvas_stream.events")}
            assert got == {
                "e-canvas": (None, "CanvasFormatAccount", CANVAS),
                "e-caliper": (None, "CaliperActorAccount", CALIPER),
                "e-caliper-none": (None, None, CALIPER_NO_ACCOUNT),
                "e-notice": (None, None, NOTICE),  # only live events name a root account
            }
            comments = {r["attname"]: r["comment"] for r in await conn.fetch(
                "select attname, col_description(attrelid, attnum) as comment from pg_attribute "
                "where attrelid = 'canvas_stream.events'::regclass "
                "and attname in ('subscription', 'root_account_uuid')")}
            assert "SQS queue" in comments["subscription"] and "root_account_uuid" in comments["root_account_uuid"]

            await asyncio.to_thread(migrate.downgrade, url, "0005")
            columns = {r["column_name"] for r in await conn.fetch(
                "select column_name from information_schema.columns where table_schema = 'canvas_stream' "
                "and table_name = 'events'")}
            assert "subscription" not in columns and "root_account_uuid" not in columns
            assert await conn.fetchval("select count(*) from canvas_stream.events") == 4
        finally:
            await conn.close()
