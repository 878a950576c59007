"""The broker stops and comes back while Canvas keeps posting.

Two ingresses share the stack: A has a spool (SPOOL_DIR), B has none. During the outage A answers
every event 2xx (spooled, fsynced), is SIGKILLed with a full spool, restarted, and drains it once
the broker is back; B answers 503 (allowed: Canvas retries, and the test retries those events
like Canvas does). In the end the warehouse holds exactly the accepted events.

Limitation of the test broker: tansu runs with memory storage, so a restarted broker is a new,
empty cluster (no topic, no data, no committed offsets). So the test waits until the events
accepted before the outage are in the warehouse before stopping it, recreates the topic after the
restart, and stops the worker across the outage (its in-memory offsets would point past the end
of the new, empty partitions). Ingress B is restarted too: tansu acknowledges and then loses writes
when a producer that lived through the restart reaches the new broker before the topic is
recreated (reproduced without canvas-stream: an old producer's retries auto-create the topic, and
records acknowledged right after ``create_topics`` vanish). With a durable broker all processes
would simply reconnect.

And while the broker is up, A and B never publish at the same moment: tansu loses acknowledged
records when two producers write at once (benchmarks/broker_concurrent_producers.py, plain aiokafka:
5 rounds of 400 and 7 of 300 lost 1-3 records with two producers, none of 400 with one). That
matches this test's rare failure (1-3 of its first 40 events missing, nothing logged by any role).
"""

from __future__ import annotations

import asyncio

from tests.faults.harness import (
    Sender,
    deliveries,
    http_status,
    ingress_role,
    kill,
    logs,
    make_events,
    restarted,
    stop,
    wait_for_events,
    wait_healthy,
    with_duplicates,
    worker_role,
)
from tests.support.procs import wait_until


async def test_broker_outage(jwks, warehouse, own_broker, tmp_path, processes):
    bootstrap, topic = await deliveries(own_broker)
    spool_dir = tmp_path / "spool"
    a = ingress_role(jwks_url=jwks.url, bootstrap=bootstrap, topic=topic, spool_dir=spool_dir)
    b = ingress_role(jwks_url=jwks.url, bootstrap=bootstrap, topic=topic)
    worker = worker_role(database_url=warehouse, bootstrap=bootstrap, topic=topic, group="outage-workers")
    await processes.launch(a, b, worker)
    to_a, to_b = Sender(a.url), Sender(b.url)
    events = make_events("broker-outage", 160)
    evens, odds = events[0::2], events[1::2]

    await to_a.send(with_duplicates(evens[:20]))  # one after the other: see the module docstring
    await to_b.send(with_duplicates(odds[:20]))
    await wait_for_events(warehouse, to_a.accepted | to_b.accepted, timeout=120, logs=lambda: logs(worker))

    await stop(worker)
    await asyncio.to_thread(own_broker.stop)
    await asyncio.gather(to_a.send(with_duplicates(evens[20:60])), to_b.send(with_duplicates(odds[20:60])))
    assert to_a.accepted == {e.event_id for e in evens[:60]}, to_a.refused[:5]  # the spool took them all
    assert {s for s in to_b.statuses if not 200 <= s < 300} <= {503}, to_b.statuses
    status, body = await http_status(f"{a.url}/readyz")
    assert status == 200 and body["spool"]["records"] > 0, body  # still accepting, and says how much waits

    await kill(a)  # SIGKILL with a full spool: what was acknowledged is on disk
    assert list(spool_dir.glob("*.spool"))
    await stop(b)  # see the module docstring: no old producer may reach the empty broker first
    await asyncio.to_thread(own_broker.start)  # same port, but empty (memory storage)
    await deliveries(own_broker)
    a2, b2, worker2 = restarted(a), restarted(b), restarted(worker)
    await processes.launch(a2, b2, worker2, healthy=False)
    await asyncio.gather(wait_healthy(a2), wait_healthy(b2))

    async def drained() -> bool:
        status, body = await http_status(f"{a2.url}/readyz")
        return status == 200 and body["spool"]["records"] == 0

    await wait_until(drained, timeout=60, message=f"spool drained\n{logs(a2)}")
    assert not list(spool_dir.glob("*.spool"))

    # Canvas retries what B refused; new events flow through both.
    retry = [e for e in odds[:60] if e.event_id not in to_b.accepted]
    to_a2, to_b2 = Sender(a2.url, accepted=to_a.accepted), Sender(b2.url, accepted=to_b.accepted)
    await to_a2.send(with_duplicates(evens[60:]))
    await to_b2.send(retry + with_duplicates(odds[60:]))
    accepted = to_a2.accepted | to_b2.accepted
    assert accepted == {e.event_id for e in events}, (to_a2.refused[:5], to_b2.refused[:5])
    await wait_for_events(warehouse, accepted, timeout=120, logs=lambda: logs(a2, b2, worker2))

    for role in (a, a2, b, b2):  # no token (every JWS header starts with "eyJ") or payload in the logs
        text = role.log.read_text(errors="replace")
        assert "eyJ" not in text and "broker-outage course" not in text, text[-2000:]
