"""Conformance: every example in Canvas's corpus, both formats, through the real pipeline
(signed HTTP POST -> ingress -> Kafka -> worker process -> PostgreSQL).

The pure corpus tests (test_normalize_corpus.py) pin the normalizers' output to each example's own
values; this test pins the warehouse to the normalizers' output, row by row, and checks the key
fields of every example directly in the tables.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ingest.publish import ensure_topic
from processors.normalize import IdPolicy, normalize
from processors.warehouse import tables
from processors.warehouse.writer import collapse
from tests.support.corpus import load_examples
from tests.support.events import make_client, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import Role, role_env, running, wait_until


async def test_every_corpus_example_lands_in_the_warehouse(engine, kafka_bootstrap, unique_topic,
                                                           migrated_database_url):
    examples = load_examples()
    topic = f"{unique_topic}conformance"
    await ensure_topic(kafka_bootstrap, topic, 3)
    env = role_env(DATABASE_URL=migrated_database_url, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic,
                   KAFKA_PARTITIONS="3", WORKER_GROUP_ID=f"{topic}-workers", WORKER_BATCH_SECONDS="0.1")
    expected_events = {}
    changes = []
    for ex in examples:
        normalized = normalize(ex.record(), IdPolicy())  # the worker runs with no home shard set
        changes.extend(normalized.changes)
        for event in normalized.events:
            expected_events[event.event_id] = event
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:
        client = await make_client(jwks.url, kafka_bootstrap, topic)
        worker = Role("worker", env)
        try:
            with running(worker):
                for ex in examples:
                    response = await client.post("/live-events", data=signed(ex.payload))
                    assert response.status == 200, (ex.label, await response.text())

                async def stored() -> int:
                    async with engine.connect() as conn:
                        n = (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one()
                    return n if n >= len(expected_events) else 0

                await wait_until(stored, timeout=120, message=f"all events stored; worker:\n{worker.output()}")
        finally:
            await client.close()

    async with engine.connect() as conn:
        rows = {r.event_id: r for r in await conn.execute(select(tables.events))}
        assert set(rows) == set(expected_events)
        for event_id, event in expected_events.items():
            row = rows[event_id]
            assert (row.event_name, row.format, row.event_time, row.user_id, row.context_id) == (
                event.event_name, event.format, event.event_time, event.user_id, event.context_id)
        assert (await conn.execute(select(func.count()).select_from(tables.quarantine))).scalar_one() == 0

        # Every entity and fact row equals the merge of the normalizers' changes (latest event per column).
        merged = collapse(changes)
        assert len(merged) > 100
        for change in merged:
            table = tables.metadata.tables[f"{tables.SCHEMA}.{change.table}"]
            where = [table.c[k] == v for k, v in change.key.items()]
            row = (await conn.execute(select(table).where(*where))).mappings().one()
            for column, value in change.fields.items():
                stored_value = row[column]
                if isinstance(value, float) or isinstance(stored_value, float):
                    assert stored_value is not None and abs(float(stored_value) - float(value)) < 1e-9
                else:
                    assert stored_value == value, (change.table, change.key, column)
            assert row["field_versions"] == change.versions
