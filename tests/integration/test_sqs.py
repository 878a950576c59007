"""``canvas-stream sqs`` against a real SQS-protocol server (moto), a real broker and PostgreSQL:
messages become warehouse rows, non-events are quarantined, other tenants are refused, and a message
leaves its queue only once it is in Kafka."""

from __future__ import annotations

import json
import random
import uuid

import asyncpg
import pytest

from canvas_stream.records import record_from_bytes
from canvas_stream.settings import plain_database_url
from processors.normalize.canvas import canvas_event_id
from tests.support.procs import Role, running, wait_until, worker_env
from tests.support.sqs import (
    OTHER_ACCOUNT,
    OUR_ACCOUNT,
    caliper_event,
    canvas_course_event,
    counters,
    create_queue,
    messages_in_queue,
    queue_empty,
    send_bodies,
    sqs_client,
    sqs_role,
    total,
)
from tests.support.topics import published


@pytest.fixture
async def client(sqs_endpoint):
    async with sqs_client(sqs_endpoint) as c:
        yield c


def worker(database_url: str, bootstrap: str, topic: str) -> Role:
    return Role("worker", worker_env(database_url, bootstrap, topic))


async def rows(database_url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_database_url(database_url))
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def until(check, what: str, *roles: Role, timeout: float = 60, interval: float = 0.25):
    """wait_until, with the roles' logs in the failure message (read when it fails, not before)."""
    try:
        return await wait_until(check, timeout=timeout, interval=interval, message=what)
    except AssertionError as exc:
        logs = "\n".join(f"--- {r.role} ---\n{r.output()}" for r in roles)
        raise AssertionError(f"{exc}\n{logs}") from None


def queue_name() -> str:
    return f"canvas-live-events-{uuid.uuid4().hex[:12]}"


async def test_messages_become_rows_with_their_queue_and_root_account(
        client, sqs_endpoint, engine, migrated_database_url, kafka_bootstrap, topic):
    queue = await create_queue(client, queue_name())
    canvas = canvas_course_event(1, "sqs-a")
    caliper = caliper_event("logged_in", OUR_ACCOUNT)
    message_ids = await send_bodies(client, queue, [json.dumps(canvas), json.dumps(caliper)])
    poller = sqs_role(sqs_endpoint, [queue], bootstrap=kafka_bootstrap, topic=topic)
    roles = (poller, worker(migrated_database_url, kafka_bootstrap, topic))
    with running(*roles):
        async def stored() -> list:
            found = await rows(migrated_database_url, "select event_id, format, subscription, root_account_uuid "
                                                      "from canvas_stream.events order by format")
            return found if len(found) >= 2 else []

        found = await until(stored, "two events stored", *roles, timeout=90)
        assert [(r["event_id"], r["format"]) for r in found] == [
            (caliper["data"][0]["id"], "caliper"), (canvas_event_id(canvas), "canvas")]
        assert {r["subscription"] for r in found} == {queue}  # the queue is the subscription
        assert {r["root_account_uuid"] for r in found} == {OUR_ACCOUNT}
        course = await rows(migrated_database_url, f"select name from canvas_stream.courses where id = "
                                                   f"{int(canvas['body']['course_id'])}")
        assert [r["name"] for r in course] == ["sqs-a course 1"]

        await until(lambda: queue_empty(client, queue), "queue emptied", *roles, timeout=30)
        samples = await counters(poller)
        name = queue.rsplit("/", 1)[-1]
        assert total(samples, "canvas_stream_sqs_received_total", queue=name) == 2
        assert total(samples, "canvas_stream_sqs_published_total", queue=name) == 2
        assert total(samples, "canvas_stream_sqs_deleted_total", queue=name) == 2

    records = [record_from_bytes(m.value) for m in await published(kafka_bootstrap, topic, 2, timeout=20)]
    assert sorted(r.format for r in records) == ["caliper", "canvas"]
    for record in records:  # the ingress's record, with the delivery on it
        assert record.source == "live_event" and not record.verification.signed
        assert record.delivery is not None and record.delivery.method == "sqs" and record.delivery.queue == queue
    assert sorted(r.delivery.message_id for r in records) == sorted(message_ids)


async def test_a_thousand_messages_with_duplicates_and_a_non_event(
        client, sqs_endpoint, engine, migrated_database_url, kafka_bootstrap, topic):
    """1,000 messages over four queues, two pollers side by side: at-least-once delivery (a third of
    the events sent twice, possibly through different queues) collapses to exactly the distinct
    events, and the one body that is not an event is quarantined. (Four queues rather than one:
    moto scans a whole queue on every request, so one queue of 1,000 takes minutes.)"""
    queues = [await create_queue(client, queue_name()) for _ in range(4)]
    events = [canvas_course_event(i, "sqs-b") for i in range(700)]
    rng = random.Random(10)
    bodies = [json.dumps(e) for e in events] + [json.dumps(e) for e in rng.sample(events, 299)]
    bodies.append("this is not an event {")
    rng.shuffle(bodies)
    assert len(bodies) == 1000
    for index, queue in enumerate(queues):
        await send_bodies(client, queue, bodies[index::4])
    expected = {canvas_event_id(e) for e in events}
    pollers = [sqs_role(sqs_endpoint, queues, bootstrap=kafka_bootstrap, topic=topic) for _ in range(2)]
    roles = (*pollers, worker(migrated_database_url, kafka_bootstrap, topic))
    with running(*roles):
        async def all_stored() -> bool:
            stored = await rows(migrated_database_url, "select event_id from canvas_stream.events")
            got = {r["event_id"] for r in stored}
            assert got <= expected, f"{len(got - expected)} events never sent"
            return got == expected

        await until(all_stored, "700 events stored", *roles, timeout=240, interval=1)
        quarantined = await until(
            lambda: rows(migrated_database_url, "select reason, source, raw from canvas_stream.quarantine"),
            "the non-event in canvas_stream.quarantine", *roles, timeout=30)
        assert len(quarantined) == 1
        assert "not an event" in quarantined[0]["reason"] and "not valid JSON" in quarantined[0]["reason"]
        assert "this is not an event {" in quarantined[0]["raw"]  # kept as received
        for queue in queues:
            await until(lambda q=queue: queue_empty(client, q), "queues emptied", *roles)
        samples = [await counters(p) for p in pollers]
        assert all(total(s, "canvas_stream_sqs_received_total") > 0 for s in samples)  # both pollers took part
        assert sum(total(s, "canvas_stream_sqs_deleted_total") for s in samples) >= 1000
        assert sum(total(s, "canvas_stream_sqs_published_total") for s in samples) >= 999
        assert sum(total(s, "canvas_stream_sqs_quarantined_total") for s in samples) >= 1
    subscriptions = await rows(migrated_database_url, "select distinct subscription from canvas_stream.events")
    assert {r["subscription"] for r in subscriptions} <= set(queues)


async def test_other_tenants_are_refused_deleted_and_counted(
        client, sqs_endpoint, engine, migrated_database_url, kafka_bootstrap, topic):
    queue = await create_queue(client, queue_name())
    ours = canvas_course_event(1, "sqs-c")
    no_account = caliper_event("logged_out", None)  # names no root account: the queue authenticated it
    theirs = [canvas_course_event(2, "sqs-c", OTHER_ACCOUNT), caliper_event("logged_in", OTHER_ACCOUNT)]
    await send_bodies(client, queue, [json.dumps(e) for e in [*theirs, ours, no_account]])
    poller = sqs_role(sqs_endpoint, [queue], bootstrap=kafka_bootstrap, topic=topic)
    roles = (poller, worker(migrated_database_url, kafka_bootstrap, topic))
    with running(*roles):
        await until(lambda: queue_empty(client, queue), "queue emptied", *roles)
        expected = {canvas_event_id(ours), no_account["data"][0]["id"]}

        async def stored() -> bool:
            stored = await rows(migrated_database_url, "select event_id from canvas_stream.events")
            got = {r["event_id"] for r in stored}
            assert got <= expected, "another tenant's event was stored"
            return got == expected

        await until(stored, "our two events stored", *roles)
        samples = await counters(poller)
        assert total(samples, "canvas_stream_live_events_refused_total", delivery="sqs",
                     reason="root account not listed") == 2
        assert total(samples, "canvas_stream_sqs_deleted_total") == 4
        assert total(samples, "canvas_stream_sqs_published_total") == 2
    assert "refused by tenant binding" in poller.log.read_text()
    assert "sqs-c course 2" not in poller.log.read_text()  # never the payload in the logs


async def test_a_message_too_large_for_the_broker_stays_for_the_redrive_policy_and_the_rest_flows(
        client, sqs_endpoint, kafka_bootstrap, topic):
    """The broker answered (no backoff, not a publish failure), but no retry gets the message in: it
    is not deleted, so the queue's redrive policy moves it to its dead-letter queue."""
    queue = await create_queue(client, queue_name())
    large = canvas_course_event(1, "sqs-large")
    large["body"]["name"] = "x" * 20_000  # over the KAFKA_MAX_RECORD_BYTES given below
    small = [canvas_course_event(i, "sqs-large") for i in (2, 3)]
    await send_bodies(client, queue, [json.dumps(e) for e in [large, *small]])
    poller = sqs_role(sqs_endpoint, [queue], bootstrap=kafka_bootstrap, topic=topic,
                      KAFKA_MAX_RECORD_BYTES=str(16 * 1024))
    with running(poller):
        async def only_the_large_one_left() -> bool:
            return await messages_in_queue(client, queue) == 1

        await until(only_the_large_one_left, "the small events published and deleted", poller)
        records = [record_from_bytes(m.value) for m in await published(kafka_bootstrap, topic, 2)]
        assert sorted(r.payload["body"]["course_id"] for r in records) == sorted(e["body"]["course_id"] for e in small)
        samples = await counters(poller)
        assert total(samples, "canvas_stream_sqs_published_total") == 2
        assert total(samples, "canvas_stream_sqs_publish_failed_total") == 0
    assert "the broker refuses this message for its size" in poller.log.read_text()
