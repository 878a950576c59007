"""Poison on the topic: quarantined with its reason, the partition keeps flowing, replay works."""

from __future__ import annotations

import asyncio
import copy
import json

from aiokafka import AIOKafkaProducer

from canvas_stream.records import Record, Verification, partition_key
from tests.faults.harness import (
    Sender,
    canvas_event,
    ingress_role,
    logs,
    make_events,
    quarantine_rows,
    wait_for_events,
    wait_healthy,
    with_duplicates,
    worker_role,
)
from tests.support.procs import role_env, run_cli, wait_until


def poison_messages(key_event) -> list[tuple[bytes, bytes, str]]:
    """(key, value, expected reason) of three kinds of poison, keyed like good events."""
    bad_time = copy.deepcopy(canvas_event("poison", 1).payload)
    bad_time["metadata"]["event_time"] = "yesterday-ish"
    refused = copy.deepcopy(canvas_event("poison", 2).payload)
    # Valid JSON that PostgreSQL's jsonb cannot hold (\u0000): only the database can refuse it. (An id
    # beyond bigint no longer gets that far: the normalizer leaves such an event column empty.)
    refused["metadata"]["note"] = "NUL \u0000 in a string"
    key = partition_key(key_event.payload, "canvas")

    def record(payload: dict) -> bytes:
        return Record("live_event", "canvas", "2024-01-01T00:00:00+00:00", payload,
                      Verification(signed=True, kid="k")).to_bytes()

    return [
        (key, b"\xff\xfe not json {", "record:"),
        (key, record(bad_time), "normalize:"),
        (key, record(refused), "database refused"),
    ]


async def test_poison_is_quarantined_and_the_partition_keeps_flowing(
        jwks, warehouse, kafka_bootstrap, topic, processes):
    ingress = ingress_role(jwks_url=jwks.url, bootstrap=kafka_bootstrap, topic=topic)
    worker = worker_role(database_url=warehouse, bootstrap=kafka_bootstrap, topic=topic, group=f"{topic}-g")
    await processes.launch(ingress, worker, healthy=False)
    await wait_healthy(ingress)
    sender = Sender(ingress.url)

    events = make_events("poison-good", 40)
    await sender.send(with_duplicates(events[:20]))
    poison = poison_messages(events[25])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, _ in poison:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    await sender.send(with_duplicates(events[20:]))  # behind the poison, on the same partitions

    assert sender.accepted == {e.event_id for e in events}, sender.refused
    await wait_for_events(warehouse, sender.accepted, timeout=120, logs=lambda: logs(ingress, worker))
    rows = await wait_until(lambda: _rows_at_least(warehouse, 3), timeout=30, message="3 quarantined")
    reasons = sorted(r["reason"] for r in rows)
    assert len(rows) == 3, reasons
    for _, _, expected in poison:
        assert any(expected in reason for reason in reasons), (expected, reasons)

    # The operator sees them and replays them; still broken, they come back with their reasons.
    env = role_env(DATABASE_URL=warehouse, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic)
    listed = await asyncio.to_thread(run_cli, env, "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len([json.loads(line) for line in listed.stdout.splitlines()]) == 3
    retried = await asyncio.to_thread(run_cli, env, "quarantine", "retry", "--all")
    assert retried.returncode == 0, retried.stderr
    assert "re-published 2" in retried.stdout and "skipped 1" in retried.stdout, retried.stdout

    async def requarantined() -> bool:
        rows = await quarantine_rows(warehouse)
        again = [r for r in rows if r["retried_at"] is not None]
        return len(rows) == 3 and len(again) == 2 and not any(r["resolved"] for r in again)

    await wait_until(requarantined, timeout=60, message="the retried records quarantined again")
    assert {r["reason"] for r in await quarantine_rows(warehouse)} == set(reasons)
    await wait_for_events(warehouse, sender.accepted, timeout=10)
    assert worker.proc.poll() is None, worker.output()


async def _rows_at_least(url: str, n: int):
    rows = await quarantine_rows(url)
    return rows if len(rows) >= n else None
