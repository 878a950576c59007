"""A worker SIGKILLed in the middle of a stream: the other replica takes its partitions and
finishes; the restarted worker rejoins. Nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio

from tests.faults.harness import (
    Sender,
    ingress_role,
    kill,
    logs,
    make_events,
    restarted,
    wait_for_events,
    with_duplicates,
    worker_role,
)
from tests.support.procs import wait_until


async def test_sigkill_a_worker_mid_stream(jwks, warehouse, kafka_bootstrap, topic, processes):
    ingress = ingress_role(jwks_url=jwks.url, bootstrap=kafka_bootstrap, topic=topic)
    group = f"{topic}-g"
    doomed = worker_role(database_url=warehouse, bootstrap=kafka_bootstrap, topic=topic, group=group)
    survivor = worker_role(database_url=warehouse, bootstrap=kafka_bootstrap, topic=topic, group=group)
    await processes.launch(ingress, doomed, survivor)
    sender = Sender(ingress.url)
    events = make_events("worker-crash", 400)

    # Both members own partitions and have committed something.
    await sender.send(with_duplicates(events[:40]))
    await wait_for_events(warehouse, sender.accepted, timeout=120, logs=lambda: logs(doomed, survivor))

    # SIGKILL one of them while events stream in (it dies holding an uncommitted batch).
    streaming = asyncio.create_task(sender.send(with_duplicates(events[40:360]), concurrency=4))
    await wait_until(lambda: _count(sender, 120), timeout=60, message="events streaming")
    await kill(doomed)
    assert doomed.proc.returncode == -9
    await streaming
    assert sender.accepted == {e.event_id for e in events[:360]}, sender.refused[:5]
    await wait_for_events(warehouse, sender.accepted, timeout=120, logs=lambda: logs(survivor))

    # The killed worker comes back (same group) and the stream goes on.
    again = restarted(doomed)
    await processes.launch(again)
    await sender.send(with_duplicates(events[360:]))
    assert sender.accepted == {e.event_id for e in events}, sender.refused[:5]
    await wait_for_events(warehouse, sender.accepted, timeout=120, logs=lambda: logs(survivor, again))
    assert survivor.proc.poll() is None and again.proc.poll() is None


async def _count(sender: Sender, n: int) -> bool:
    return len(sender.accepted) >= n
