"""PostgreSQL stops and comes back: workers report not ready, retry with backoff, catch up; the
same processes keep running (no crash loop) and nothing is lost or duplicated.

Uses its own PostgreSQL (persistent data dir, fixed port) so the session database is not touched.
"""

from __future__ import annotations

import asyncio

from tests.faults.harness import (
    Sender,
    http_status,
    ingress_role,
    logs,
    make_events,
    wait_for_events,
    with_duplicates,
    worker_role,
)
from tests.support.procs import wait_until


async def test_database_outage(jwks, own_postgres, kafka_bootstrap, topic, processes):
    url = own_postgres.url
    ingress = ingress_role(jwks_url=jwks.url, bootstrap=kafka_bootstrap, topic=topic)
    workers = [worker_role(database_url=url, bootstrap=kafka_bootstrap, topic=topic, group=f"{topic}-g")
               for _ in range(2)]
    await processes.launch(ingress, *workers)
    pids = [w.proc.pid for w in workers]
    sender = Sender(ingress.url)
    events = make_events("db-outage", 200)

    await sender.send(with_duplicates(events[:40]))
    await wait_for_events(url, sender.accepted, timeout=120, logs=lambda: logs(*workers))

    await asyncio.to_thread(own_postgres.stop)  # fast shutdown; the data dir stays
    # The ingress does not need the database: events keep being accepted into Kafka.
    await sender.send(with_duplicates(events[40:160]))
    assert sender.accepted == {e.event_id for e in events[:160]}, sender.refused[:5]

    async def not_ready() -> bool:
        answers = [await http_status(f"{w.status_url}/readyz") for w in workers]
        return all(status == 503 and body and body.get("database") == "unavailable" for status, body in answers)

    await wait_until(not_ready, timeout=60, message="workers reporting not ready")
    await asyncio.sleep(3)  # a few retries with backoff, while the database is away

    await asyncio.to_thread(own_postgres.start)
    await sender.send(with_duplicates(events[160:]))
    await wait_for_events(url, sender.accepted, timeout=120, logs=lambda: logs(*workers))
    assert sender.accepted == {e.event_id for e in events}

    async def ready() -> bool:  # ready, caught up (lag 0 against the broker's end offsets), not stalled
        answers = [await http_status(f"{w.status_url}/readyz") for w in workers]
        return all(status == 200 and body["lag"] == 0 and not body["stalled"] for status, body in answers)

    await wait_until(ready, timeout=30, message="workers ready and caught up again")
    assert [w.proc.pid for w in workers] == pids and all(w.proc.poll() is None for w in workers), logs(*workers)
