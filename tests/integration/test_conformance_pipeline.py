"""Conformance: every example in Canvas's corpus, both formats, through the real pipeline
(signed HTTP POST -> ingress -> Kafka -> worker process -> PostgreSQL), with LTI notices beside them.

The pure corpus tests (test_normalize_corpus.py) pin the normalizers' output to each example's own
values; this test pins the warehouse to the normalizers' output, row by row, and checks the key
fields of every example directly in the tables. Then ``replay`` rebuilds the warehouse from
``events`` alone and must leave every table exactly as the live path left it.
"""

from __future__ import annotations

from sqlalchemy import func, select

from processors.normalize import IdPolicy, normalize
from processors.replay import replay
from processors.warehouse import tables
from processors.warehouse.writer import collapse
from tests.support import lti
from tests.support.corpus import load_examples
from tests.support.events import make_client, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import Role, running, wait_until, worker_env
from tests.support.topics import created_topic
from tests.support.warehouse import snapshot

LTI_CLIENT_ID = "the-client-id-the-ingress-checks"  # not the notices' azp: replay must keep the checked one


async def test_every_corpus_example_lands_in_the_warehouse(engine, kafka_bootstrap, unique_topic,
                                                           migrated_database_url):
    examples = load_examples()
    topic = await created_topic(kafka_bootstrap, f"{unique_topic}conformance")
    expected_events = {}
    changes = []
    for ex in examples:
        normalized = normalize(ex.record(), IdPolicy())  # the worker runs with no home shard set
        changes.extend(normalized.changes)
        for event in normalized.events:
            expected_events[event.event_id] = event
    notices = [lti.notice(kind) for kind in (*lti.BODIES, "LtiHelloWorldNotice")]
    keys = [jwk_for(rsa_key("current"), "current"), jwk_for(rsa_key("lti-current"), lti.KID)]
    async with JwksServer(keys) as jwks:
        client = await make_client(jwks.url, kafka_bootstrap, topic, lti_platform_jwks_url=jwks.url,
                                   lti_platform_issuer=lti.ISSUER, lti_client_id=LTI_CLIENT_ID)
        worker = Role("worker", worker_env(migrated_database_url, kafka_bootstrap, topic))
        try:
            with running(worker):
                for ex in examples:
                    response = await client.post("/live-events", data=signed(ex.payload))
                    assert response.status == 200, (ex.label, await response.text())
                tokens = [lti.jwt_of({**claims, "aud": LTI_CLIENT_ID}) for claims in notices]
                response = await client.post(f"/lti/notices/{lti.DEPLOYMENT}", data=lti.batch(*tokens),
                                             headers={"Content-Type": "application/json"})
                assert response.status == 200, await response.text()
                assert [r["status"] for r in (await response.json())["results"]] == ["accepted"] * len(notices)

                async def stored() -> int:
                    async with engine.connect() as conn:
                        n = (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one()
                    return n if n >= len(expected_events) + len(notices) else 0

                await wait_until(stored, timeout=120, message=f"all events stored; worker:\n{worker.output()}")
        finally:
            await client.close()

    async with engine.connect() as conn:
        rows = {r.event_id: r for r in await conn.execute(select(tables.events))}
        assert set(rows) == set(expected_events) | {f"lti-notice:{lti.nid(claims)}" for claims in notices}
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

    # The corpus documents some happenings in both formats: they are one fact row each.
    async with engine.connect() as conn:
        shared = (await conn.execute(select(func.count()).select_from(
            select(tables.events.c.happening_id).group_by(tables.events.c.happening_id)
            .having(func.count() > 1).subquery()))).scalar_one()
        page_views = (await conn.execute(
            select(func.count()).select_from(tables.TABLES["asset_accesses"]))).scalar_one()
        views = [e for e in expected_events.values() if e.event_name == "asset_accessed"]
        # 40 of the docs' page views are documented in both formats
        assert shared >= 40 and page_views == len({e.happening_id for e in views}) <= len(views) - 40

    # A rebuild from events alone leaves every table as the live path left it, LTI notices included.
    live = await snapshot(engine, tables.metadata.sorted_tables)
    stored_notices = {r.notice_id: r for r in await _rows(engine, tables.lti_notices)}
    assert len(stored_notices) == len(notices)
    assert all(r.jwt and r.kid == lti.KID and r.client_id == LTI_CLIENT_ID for r in stored_notices.values())
    stats = await replay(engine, IdPolicy(), page_size=17)
    assert stats.quarantined == 0 and stats.events_updated == 0
    assert await snapshot(engine, tables.metadata.sorted_tables) == live


async def _rows(engine, table) -> list:
    async with engine.connect() as conn:
        return list(await conn.execute(select(table)))
