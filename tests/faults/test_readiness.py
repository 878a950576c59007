"""Readiness tells the truth under faults, and a stalled worker heals by exiting.

* A hung broker (its process SIGSTOPped for 8 s): both ingresses' /readyz detail says
  ``broker: unavailable`` within a few seconds (a real metadata request with a timeout, not the
  producer's cached metadata); the status code keeps its rule: the ingress with a spool stays
  ready (it still accepts events durably), the one without answers 503.
* A PostgreSQL outage: a worker with nothing to write says ``database: unavailable`` (a bounded
  ``SELECT 1``), and, although its partitions have lag and it commits nothing for longer than
  ``WORKER_STALL_SECONDS``, it does not exit: an outage is not a stall.
* A real stall: the worker's transaction waits on a lock another session holds, so lag grows and
  nothing commits while the database answers. The worker exits with status 3 (the restart policy
  restarts it); a new worker then stores everything.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from canvas_stream.settings import plain_database_url
from processors.watchdog import EXIT_STALLED
from tests.faults.harness import (
    Sender,
    deliveries,
    http_status,
    ingress_role,
    logs,
    make_events,
    paused,
    wait_for_events,
    worker_role,
)
from tests.support.procs import wait_until


async def test_a_hung_broker_shows_in_ingress_readiness(jwks, own_broker, tmp_path, processes):
    bootstrap, topic = await deliveries(own_broker)
    spooling = ingress_role(jwks_url=jwks.url, bootstrap=bootstrap, topic=topic, spool_dir=tmp_path / "spool")
    plain = ingress_role(jwks_url=jwks.url, bootstrap=bootstrap, topic=topic)
    await processes.launch(spooling, plain)

    async def both(expect_broker: str) -> list[tuple[int, dict]] | None:
        answers = [await http_status(f"{role.url}/readyz") for role in (spooling, plain)]
        return answers if all(body and body.get("broker") == expect_broker for _, body in answers) else None

    await wait_until(lambda: both("ok"), timeout=30, message="both ingresses see the broker")
    assert await Sender(spooling.url).send(make_events("hung", 1)) == [200]

    with paused(own_broker):
        stopped_at = time.monotonic()
        seen: list[tuple[float, list[tuple[int, dict]]]] = []
        while time.monotonic() - stopped_at < 8:
            asked = time.monotonic()
            answers = [await http_status(f"{role.url}/readyz") for role in (spooling, plain)]
            assert time.monotonic() - asked < 6, "a readiness probe must be bounded"
            seen.append((asked - stopped_at, answers))
            await asyncio.sleep(0.5)
        unavailable = [(t, a) for t, a in seen if all(body and body["broker"] == "unavailable" for _, body in a)]
        assert unavailable, seen
        assert unavailable[0][0] < 5, f"took {unavailable[0][0]:.1f} s to notice: {seen}"
        for _, ((spool_status, _), (plain_status, _)) in unavailable:
            assert spool_status == 200  # it can still spool: stays in rotation
            assert plain_status == 503
    await wait_until(lambda: both("ok"), timeout=30, message="both ingresses see the broker again")


async def test_database_outage_is_not_a_stall_and_a_real_stall_exits(jwks, own_postgres, kafka_bootstrap, topic,
                                                                    processes):
    url = own_postgres.url
    ingress = ingress_role(jwks_url=jwks.url, bootstrap=kafka_bootstrap, topic=topic)
    worker = worker_role(database_url=url, bootstrap=kafka_bootstrap, topic=topic, group=f"{topic}-g",
                         WORKER_STALL_SECONDS="4")
    await processes.launch(ingress, worker)
    sender = Sender(ingress.url)
    events = make_events("stall", 60)
    await sender.send(events[:10])
    await wait_for_events(url, sender.accepted, timeout=90, logs=lambda: logs(worker))

    async def worker_ready() -> dict | None:
        status, body = await http_status(f"{worker.status_url}/readyz")
        return body if status == 200 and body and body["lag"] == 0 and body["database"] == "ok" else None

    await wait_until(worker_ready, timeout=30, message="worker ready and caught up")

    # 1. PostgreSQL stops while the worker has nothing to write: the probe, not the last write, answers.
    await asyncio.to_thread(own_postgres.stop)

    async def database_unavailable() -> dict | None:
        status, body = await http_status(f"{worker.status_url}/readyz")
        return body if status == 503 and body and body["database"] == "unavailable" else None

    await wait_until(database_unavailable, timeout=15, message=f"worker reporting the outage\n{logs(worker)}")
    await sender.send(events[10:30])  # lag, and no commit possible
    assert sender.accepted == {e.event_id for e in events[:30]}
    await asyncio.sleep(12)  # three times WORKER_STALL_SECONDS
    assert worker.proc is not None and worker.proc.poll() is None, f"worker exited during an outage\n{logs(worker)}"
    await asyncio.to_thread(own_postgres.start)
    await wait_for_events(url, sender.accepted, timeout=90, logs=lambda: logs(worker))
    await wait_until(worker_ready, timeout=30, message="worker ready again after the outage")
    assert worker.proc.poll() is None

    # 2. A real stall: the worker's insert waits on a lock; the database answers everything else.
    blocker = await asyncpg.connect(plain_database_url(url))
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE canvas_stream.events IN ACCESS EXCLUSIVE MODE")
        stalled_at = time.monotonic()
        await sender.send(events[30:45])
        code = await asyncio.to_thread(worker.proc.wait, 60)
        took = time.monotonic() - stalled_at
        assert code == EXIT_STALLED, f"exit status {code}\n{logs(worker)}"
        assert 4 <= took < 30, took
        assert "worker stalled" in worker.log.read_text(), logs(worker)
        await lock.rollback()
    finally:
        await blocker.close()

    # 3. The restart policy starts it again; nothing was lost.
    again = worker_role(database_url=url, bootstrap=kafka_bootstrap, topic=topic, group=f"{topic}-g",
                        WORKER_STALL_SECONDS="4")
    await processes.launch(again, healthy=False)
    await sender.send(events[45:])
    await wait_for_events(url, sender.accepted, timeout=120, logs=lambda: logs(again))
    assert sender.accepted == {e.event_id for e in events}
