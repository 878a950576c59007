"""Migration 0010 upgrades a warehouse of the previous release in place, and a replay then finishes
what only the normalizer can do (merging facts delivered in both formats, moving entity describes).

The previous release stored one happening delivered in both formats as two events and two fact rows
keyed by event id, each Caliper entity describe as an events row named caliper:<Type>/None, and an
LTI notice's JWT only in lti_notices.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg

from canvas_stream import migrate
from canvas_stream.settings import plain_database_url
from processors.normalize import IdPolicy, normalize
from processors.replay import replay
from processors.warehouse.schema import SCHEMA
from tests.support.happenings import paired_happenings, record
from tests.support.lti import CLAIM, KID, jwt_of, notice
from tests.support.warehouse import warehouse_at

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

S = SCHEMA
PERSON = {"id": "https://lms.example.org/users/4711", "type": "Person", "name": "Ada"}
ENTITY_ENVELOPE = {"sensor": "https://lms.example.org/sensors/7", "sendTime": "2024-10-02T09:30:00.000Z",
                   "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p1", "data": [PERSON]}


def _previous_release_rows():
    canvas, caliper = paired_happenings(1, types=["grade_change"], seed=3)[0]
    canvas["metadata"]["real_user_id"] = "10000000000007"
    ext = caliper["data"][0]["actor"].setdefault("extensions", {}).setdefault("com.instructure.canvas", {})
    ext.update(real_user_id="10000000000007", user_login="teacher@example.edu", root_account_id="10000000000001")
    return canvas, caliper


async def test_0010_upgrades_in_place_and_replay_merges_what_it_could_not(postgres_server_url):
    canvas, caliper = _previous_release_rows()
    ids = {fmt: normalize(record(p), IDS).events[0].event_id for fmt, p in (("canvas", canvas), ("caliper", caliper))}
    claims = notice("LtiContextCopyNotice")
    token = jwt_of(claims)
    notice_id = claims[CLAIM + "notice"]["id"]
    async with warehouse_at(postgres_server_url, "0006") as (url, engine):
        conn = await asyncpg.connect(plain_database_url(url))
        try:
            events = [(ids["canvas"], "grade_change", "canvas", canvas),
                      (ids["caliper"], "grade_change", "caliper", caliper),
                      (PERSON["id"], "caliper:Person/None", "caliper", ENTITY_ENVELOPE),
                      (f"lti-notice:{notice_id}", "LtiContextCopyNotice", "lti_notice", claims)]
            await conn.executemany(
                f"insert into {S}.events (event_id, event_name, format, event_time, received_at, payload) "
                "values ($1, $2, $3, '2026-05-06T07:08:09Z', '2026-05-06T07:09:00Z', $4::jsonb)",
                [(i, n, f, json.dumps(p)) for i, n, f, p in events])
            await conn.executemany(  # one grade change, counted twice by the previous release
                f"insert into {S}.grade_changes (event_id, submission_id, score) values ($1, 42, 8.5)",
                [(ids["canvas"],), (ids["caliper"],)])
            await conn.execute(
                f"insert into {S}.lti_notices (notice_id, notice_type, issuer, client_id, kid, jwt, claims, "
                "received_at, notice_timestamp) values ($1, 'LtiContextCopyNotice', $2, 'checked-client', $3, $4, "
                "$5::jsonb, '2026-05-06T07:09:00Z', '2025-03-19T11:24:25Z')",
                notice_id, claims["iss"], KID, token, json.dumps(claims))

            await asyncio.to_thread(migrate.upgrade, url, "0010")
            rows = {r["event_id"]: r for r in await conn.fetch(f"select * from {S}.events")}
            assert all(r["happening_id"] == event_id for event_id, r in rows.items())  # each its own, for now
            for fmt in ("canvas", "caliper"):
                row = rows[ids[fmt]]
                assert row["real_user_id"] == 10000000000007, fmt
                assert row["user_login"] == "teacher@example.edu", fmt
                assert row["root_account_id"] == 10000000000001, fmt
                assert row["request_id"] == canvas["metadata"]["request_id"], fmt
            assert rows[ids["canvas"]]["user_sis_id"] == canvas["metadata"]["user_sis_id"]
            arrival = json.loads(rows[f"lti-notice:{notice_id}"]["arrival"])
            assert (arrival["raw"], arrival["verification"]["kid"], arrival["extra"]["client_id"]) == (
                token, KID, "checked-client")
            facts = await conn.fetch(f"select happening_id, event_id, real_user_id from {S}.grade_changes")
            assert sorted((f["happening_id"], f["event_id"], f["real_user_id"]) for f in facts) == sorted(
                (i, i, 10000000000007) for i in ids.values())
            assert await conn.fetchval(f"select count(*) from {S}.caliper_entities") == 0
            notice_before = dict(await conn.fetchrow(
                f"select jwt, kid, client_id, claims from {S}.lti_notices"))

            await asyncio.to_thread(migrate.upgrade, url)  # replay writes with today's keys (0014: partitioned)
            stats = await replay(engine, IDS)
            assert stats.quarantined == 0 and stats.entities_moved == 1
            happenings = {r["event_id"]: r["happening_id"] for r in await conn.fetch(
                f"select event_id, happening_id from {S}.events")}
            assert set(happenings) == {ids["canvas"], ids["caliper"], f"lti-notice:{notice_id}"}
            assert happenings[ids["canvas"]] == happenings[ids["caliper"]] != ids["canvas"]
            merged = await conn.fetch(f"select happening_id, event_id, score from {S}.grade_changes")
            assert [(m["happening_id"], m["score"]) for m in merged] == [(happenings[ids["canvas"]], 8.5)]
            assert merged[0]["event_id"] in ids.values()
            assert [tuple(r) for r in await conn.fetch(f"select id, name from {S}.caliper_entities")] == [
                (PERSON["id"], "Ada")]
            assert dict(await conn.fetchrow(f"select jwt, kid, client_id, claims from {S}.lti_notices")) == \
                notice_before

            await asyncio.to_thread(migrate.downgrade, url, "0006")
            columns = {r["column_name"] for r in await conn.fetch(
                "select column_name from information_schema.columns where table_schema = $1 "
                "and table_name = 'grade_changes'", S)}
            assert "event_id" in columns and "happening_id" not in columns
            assert [r["event_id"] for r in await conn.fetch(f"select event_id from {S}.grade_changes")] == [
                merged[0]["event_id"]]
            assert await conn.fetchval(f"select count(*) from {S}.events") == 3
        finally:
            await conn.close()
