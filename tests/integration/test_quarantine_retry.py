"""A quarantined record that succeeds after a fix is retried into its rows.

Two ways into the quarantine, both for a mapping bug (simulated here by a normalizer that refuses
some event types): a worker's batch (the Kafka message is kept) and a replay (the rebuilt record is
kept). After the fix, ``canvas-stream quarantine retry --all`` re-publishes both to the topic, a real
worker stores their rows, and the warehouse is what it would have been without the bug.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select, text

from canvas_stream.records import record_from_bytes
from processors import batch as batch_module
from processors import replay as replay_module
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.normalize.model import NormalizationError
from processors.replay import replay
from processors.sink import WarehouseSink
from processors.warehouse import tables
from tests.support.corpus import load_examples
from tests.support.procs import Role, run_cli, running, wait_until, worker_env
from tests.support.topics import created_topic
from tests.support.warehouse import snapshot

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

BROKEN = {"grade_change", "logged_in", "logged_out"}  # the event types the buggy mapping refuses


def buggy(normalize):
    def refuse_some(record, ids):
        out = normalize(record, ids)
        if any(e.event_name in BROKEN for e in out.events):
            raise NormalizationError("mapping bug: cannot map this event yet")
        return out
    return refuse_some


async def quarantine(engine) -> list:
    async with engine.connect() as conn:
        return list(await conn.execute(select(tables.quarantine).order_by(tables.quarantine.c.id)))


async def test_records_quarantined_by_a_mapping_bug_are_retried_into_their_rows_after_the_fix(
        engine, monkeypatch, kafka_bootstrap, unique_topic, migrated_database_url):
    examples = [e for e in load_examples() if e.kind == "event"]
    messages = [e.record().to_bytes() for e in examples]
    sink = WarehouseSink(engine)
    await sink.write(prepare(messages, IDS))
    expected = await snapshot(engine)
    assert expected["grade_changes"] and expected["logins"]

    # The bug, on the live path: the login deliveries of a batch are quarantined as received.
    monkeypatch.setattr(batch_module, "normalize", buggy(batch_module.normalize))
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables.SCHEMA}.logins, {tables.SCHEMA}.grade_changes"))
    login_messages = [m for m, e in zip(messages, examples, strict=True) if e.doc in ("logged_in", "logged_out")]
    live = prepare(login_messages, IDS)
    assert len(live.quarantined()) == len(login_messages) >= 2
    await sink.write(live)
    # ... and in a replay: every grade_change (and login) row it meets is quarantined as its record.
    monkeypatch.setattr(replay_module, "normalize", buggy(replay_module.normalize))
    stats = await replay(engine, IDS)
    assert stats.quarantined > len(login_messages)
    rows = await quarantine(engine)
    assert {r.source for r in rows} == {"replay", "live_event"}
    for row in rows:  # what is kept is a record a worker reads, not a Python repr
        assert record_from_bytes(row.raw.encode()).payload
    broken = await snapshot(engine)
    assert broken["grade_changes"] == [] and broken["logins"] == []

    monkeypatch.undo()  # the fix
    topic = await created_topic(kafka_bootstrap, f"{unique_topic}retry")
    env = worker_env(migrated_database_url, kafka_bootstrap, topic)
    retried = await asyncio.to_thread(run_cli, env, "quarantine", "retry", "--all")
    assert retried.returncode == 0, retried.stderr
    assert f"re-published {len(rows)} record(s); skipped 0" in retried.stdout, retried.stdout

    worker = Role("worker", env)
    with running(worker):
        async def restored() -> bool:
            now = await snapshot(engine)
            return now["grade_changes"] == expected["grade_changes"] and now["logins"] == expected["logins"]

        await wait_until(restored, timeout=120, message=f"rows restored; worker:\n{worker.output()}")
    assert await snapshot(engine) == expected
    after = await quarantine(engine)
    assert len(after) == len(rows) and all(r.resolved and r.retried_at is not None for r in after)
