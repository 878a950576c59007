"""Happenings, entities and replay against a real PostgreSQL, through the worker's own write path
(``prepare`` + ``WarehouseSink``): one happening delivered in both formats is one fact row; Caliper
entity describes are entities; a replay rebuilds LTI notices whole and moves old entity rows."""

from __future__ import annotations

import copy
import json

from sqlalchemy import func, select, text

from canvas_stream.records import Record, Verification
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.normalize.model import EPOCH
from processors.replay import replay
from processors.sink import WarehouseSink
from processors.warehouse import tables
from tests.support.corpus import CORPUS
from tests.support.happenings import FACT_TABLES, paired_happenings, record
from tests.support.lti import CLAIM, KID, jwt_of, notice
from tests.support.warehouse import empty_tables

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

S = tables.SCHEMA
ENVELOPE = json.loads((CORPUS.parent / "caliper-envelopes" / "mixed_payload.json").read_text())


async def write(engine, payloads: list[dict], per_batch: int = 5) -> None:
    sink = WarehouseSink(engine)
    for start in range(0, len(payloads), per_batch):
        batch = prepare([record(p).to_bytes() for p in payloads[start:start + per_batch]], IDS)
        assert batch.quarantined() == []
        await sink.write(batch)


async def scalar(engine, sql: str):
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def fact_counts(engine) -> dict[str, int]:
    return {name: await scalar(engine, f"select count(*) from {S}.{name}") for name in FACT_TABLES}


async def snapshot(engine, names) -> dict[str, list[tuple]]:
    out = {}
    async with engine.connect() as conn:
        for name in names:
            table = tables.TABLES[name]
            out[name] = [tuple(r) for r in await conn.execute(select(table).order_by(*table.primary_key.columns))]
    return out


async def empty(engine) -> None:
    async with engine.begin() as conn:
        await empty_tables(conn)


async def test_both_formats_store_the_fact_counts_of_one_format_alone(engine):
    pairs = paired_happenings(4)
    await write(engine, [canvas for canvas, _ in pairs])
    one_format = await fact_counts(engine)
    assert one_format["grade_changes"] == one_format["asset_accesses"] == one_format["logins"] == 4
    events_of_one = await scalar(engine, f"select count(*) from {S}.events")
    await empty(engine)

    # Both subscriptions deliver: in other batches, Caliper first for half of the happenings.
    both = [c for _, c in pairs[::2]] + [c for c, _ in pairs] + [c for _, c in pairs[1::2]]
    await write(engine, both)
    assert await fact_counts(engine) == one_format
    assert await scalar(engine, f"select count(*) from {S}.events") == 2 * events_of_one
    assert await scalar(engine, f"select count(distinct happening_id) from {S}.events") == events_of_one
    # Each fact row names one of its happening's two deliveries, both still in events.
    async with engine.connect() as conn:
        deliveries = (await conn.execute(text(
            f"select f.event_id = any(array_agg(e.event_id)), array_agg(e.format order by e.format) "
            f"from {S}.asset_accesses f join {S}.events e on e.happening_id = f.happening_id "
            f"group by f.happening_id, f.event_id"))).all()
    assert deliveries and all(tuple(d) == (True, ["caliper", "canvas"]) for d in deliveries)
    merged = await snapshot(engine, FACT_TABLES)

    # The merged rows do not depend on which delivery came first.
    await empty(engine)
    await write(engine, both[::-1], per_batch=3)
    assert await snapshot(engine, FACT_TABLES) == merged


async def test_entities_are_stored_as_entities_latest_describe_by_send_time(engine):
    later = copy.deepcopy(ENVELOPE)
    later["sendTime"] = "2024-10-03T09:30:00.000Z"
    later["data"] = [dict(ENVELOPE["data"][0], name="Ada Example")]
    await write(engine, [later])
    await write(engine, [ENVELOPE])  # the older describe arrives late
    await write(engine, [ENVELOPE])  # and again: a repeat changes nothing
    async with engine.connect() as conn:
        rows = {r.id: r for r in await conn.execute(select(tables.TABLES["caliper_entities"]))}
        names = (await conn.execute(select(tables.events.c.event_name).order_by(tables.events.c.event_name))).scalars()
        assert list(names) == ["caliper:AssessmentEvent/Started", "caliper:AssessmentEvent/Submitted",
                               "caliper:GradeEvent/Graded"]
    assert sorted(r.type for r in rows.values()) == ["Assessment", "CourseSection", "Person", "SoftwareApplication"]
    person = rows["https://lms.example.org/users/4711"]
    assert person.name == "Ada Example" and person.send_time.isoformat() == "2024-10-03T09:30:00+00:00"
    assert rows["https://lms.example.org"].entity == ENVELOPE["data"][2]


async def test_replay_moves_an_entity_stored_as_an_event_before_0010(engine):
    """Before migration 0010 each entity describe became an events row named caliper:<Type>/None."""
    item = ENVELOPE["data"][3]
    payload = {"sensor": ENVELOPE["sensor"], "sendTime": ENVELOPE["sendTime"],
               "dataVersion": ENVELOPE["dataVersion"], "data": [item]}
    async with engine.begin() as conn:
        await conn.execute(tables.events.insert().values(
            event_id=item["id"], happening_id=item["id"], event_name="caliper:CourseSection/None", format="caliper",
            event_time=EPOCH, received_at=func.now(), payload=payload))  # undated: filed at the epoch (0014)
    await write(engine, [paired_happenings(1, types=["grade_change"])[0][0]])
    stats = await replay(engine, IDS)
    assert stats.entities_moved == 1 and stats.quarantined == 0
    async with engine.connect() as conn:
        names = (await conn.execute(select(tables.events.c.event_name))).scalars().all()
        entity = (await conn.execute(select(tables.TABLES["caliper_entities"]))).one()
    assert names == ["grade_change"]
    assert (entity.id, entity.type, entity.entity) == (item["id"], "CourseSection", item)


async def test_replay_rebuilds_lti_notices_whole(engine):
    """The JWT, its key id and the client id the ingress checked come back from events.arrival."""
    claims = notice("LtiContextCopyNotice", iat=1_742_380_000)
    token = jwt_of(claims)
    live = Record(source="lti_notice", format="lti_notice", received_at="2025-03-19T11:24:26+00:00",
                  payload=claims, verification=Verification(signed=True, kid=KID, issuer=claims["iss"],
                                                            verified_at="2025-03-19T11:24:26+00:00"),
                  raw=token, extra={"client_id": "the-configured-client", "path_deployment_id": None})
    await WarehouseSink(engine).write(prepare([live.to_bytes()], IDS))
    names = ["lti_notices", "lti_deployments", "context_copies"]
    before = await snapshot(engine, names)
    stored = before["lti_notices"][0]
    columns = [c.name for c in tables.lti_notices.c]
    assert stored[columns.index("jwt")] == token and stored[columns.index("kid")] == KID
    assert stored[columns.index("client_id")] == "the-configured-client" != claims["aud"]
    assert stored[columns.index("notice_id")] == claims[CLAIM + "notice"]["id"]
    await replay(engine, IDS)
    assert await snapshot(engine, names) == before
