"""The real worker (its own process, the real broker and PostgreSQL) reads the erasure list and
pseudonymizes: events for a person erased before they arrive are dropped or redacted on arrival,
with ``PSEUDONYMIZE=true`` no IP address or user agent is stored in clear, and the key never
appears in the worker's output."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from processors.privacy.erasure import ErasureRequest, erase
from processors.warehouse.schema import SCHEMA
from tests.support.people import scan, scenarios, someone
from tests.support.procs import Role, running, wait_until, worker_env
from tests.support.topics import committed, created_topic, publish

KEY = "worker-test-key-of-at-least-32-bytes!"


async def test_the_worker_redacts_erased_people_on_arrival_and_pseudonymizes(
        engine, kafka_bootstrap, unique_topic, migrated_database_url):
    p, others = someone(5_271_009, "worker"), [someone(50_000_000 + i, "worker-o") for i in range(3)]
    # Before anything about them arrived: the request gives what the warehouse cannot know yet (docs/privacy.md).
    report = await erase(engine, ErasureRequest(p.global_id, "dpo ticket 7", names=(p.name,), emails=(p.email,),
                                                identifiers=(p.uuid, p.lti)))
    assert report.erasure_id is not None
    messages = list(scenarios(p, others, datetime.now(UTC).replace(microsecond=0), 3, 31).values())

    topic = await created_topic(kafka_bootstrap, f"{unique_topic}-privacy", 1)
    await publish(kafka_bootstrap, topic, messages)

    env = worker_env(migrated_database_url, kafka_bootstrap, topic, 1, WORKER_BATCH_SIZE="50",
                     WORKER_SESSION_TIMEOUT_SECONDS="6", PSEUDONYMIZE="true", PSEUDONYMIZATION_KEY=KEY)
    group = env["WORKER_GROUP_ID"]
    worker = Role("worker", env)
    with running(worker):
        async def all_committed() -> bool:
            return await committed(kafka_bootstrap, topic, group) >= len(messages)

        await wait_until(all_committed, timeout=90, message=f"all offsets committed; log:\n{worker.output()}")
    assert KEY not in worker.output()

    problems = await scan(engine, p)
    assert problems == [], "\n".join(problems)
    async with engine.connect() as conn:
        kept = (await conn.execute(text(f"SELECT count(*) FROM {SCHEMA}.events"))).scalar_one()
        ips = (await conn.execute(text(
            f"SELECT count(*) FROM {SCHEMA}.events WHERE payload::text LIKE '%198.51.100.23%'"))).scalar_one()
        hashed = (await conn.execute(text(
            f"SELECT count(*) FROM {SCHEMA}.events WHERE payload::text LIKE '%hmac:%'"))).scalar_one()
    assert kept >= 4 and ips == 0 and hashed >= 1  # others' events stay, pseudonymized; the person's are gone
