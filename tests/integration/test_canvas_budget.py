"""Canvas's 24-hour budget from canvas_stream.ingress_answers: summed over replicas, surviving restarts,
fed by the real ingress's answers, exported as gauges and warned about in /readyz."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from sqlalchemy import text

from canvas_stream.settings import Settings
from ingest.answers import AnswerLedger
from ingest.app import create_app
from ingest.jwks import JwksCache
from ingest.publish import KafkaPublisher, ensure_topic
from processors.warehouse.tables import TABLES
from tests.support.events import ISSUER, example, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import wait_until

ingress_answers = TABLES["ingress_answers"]


def gauge(route: str, kind: str) -> float | None:
    return REGISTRY.get_sample_value("canvas_stream_canvas_answers_24h", {"route": route, "kind": kind})


async def test_budget_sums_every_replica_survives_restarts_and_forgets_after_24_hours(engine, migrated_database_url):
    a = AnswerLedger(migrated_database_url, replica="replica-a")
    b = AnswerLedger(migrated_database_url, replica="replica-b")
    try:
        for _ in range(3):
            a.record("/live-events", 401, 0.05)
        for _ in range(2):
            a.record("/live-events", 200, 16.0)  # answered, but after Canvas gave up: timeouts
        a.record("/live-events", 200, 0.01)
        b.record("/live-events", 503, 0.1)
        for _ in range(4):
            b.record("/lti/notices", 403, 0.01)  # foreign tenant: apart
        assert await a.flush() == 2 and await b.flush() == 2
        assert await a.flush() == 0  # nothing new
        a.tally.mark_dirty(list(a.tally.counts))
        await a.flush()  # a repeated flush (absolute counts) changes nothing
        async with engine.begin() as conn:  # an answer from more than 24 hours ago no longer counts
            await conn.execute(ingress_answers.insert().values(
                minute=datetime.now(UTC) - timedelta(hours=25), route="/live-events", replica="old", code=500,
                answers=1000, slow=0))
        budget = await b.read_budget()  # any replica reads the same figures
        live = {r.route: r for r in budget.routes}["/live-events"]
        lti = {r.route: r for r in budget.routes}["/lti/notices"]
        assert (live.timeouts, live.errors, live.foreign_tenant) == (2, 4, 0)
        assert (lti.timeouts, lti.errors, lti.foreign_tenant) == (0, 0, 4)
        assert gauge("/live-events", "timeout") == 2 and gauge("/live-events", "error") == 4
        assert gauge("/lti/notices", "foreign_tenant") == 4
        assert REGISTRY.get_sample_value("canvas_stream_canvas_deactivation_threshold", {"kind": "timeout"}) == 9500
    finally:
        await a.stop()
        await b.stop()

    restarted = AnswerLedger(migrated_database_url)  # a new process: a new replica name, same table
    try:
        assert restarted.replica not in ("replica-a", "replica-b")
        restarted.record("/live-events", 401, 0.05)
        await restarted.flush()
        live = {r.route: r for r in (await restarted.read_budget()).routes}["/live-events"]
        assert (live.timeouts, live.errors) == (2, 5)
    finally:
        await restarted.stop()


@pytest.fixture
async def jwks():
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as server:
        yield server


async def test_the_ingress_records_its_answers_and_readyz_warns_at_ten_percent(
        jwks, kafka_bootstrap, unique_topic, engine, migrated_database_url):
    topic = f"{unique_topic}budget"
    await ensure_topic(kafka_bootstrap, topic, 1)
    settings = Settings(live_events_allow_any_account=True,
            kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic, live_events_jwks_url=jwks.url,
                        live_events_issuer=ISSUER, kafka_ack_timeout_seconds=3, database_url=migrated_database_url)
    ledger = AnswerLedger(migrated_database_url, flush_every=0.2, replica="this-ingress")
    app = create_app(settings, publisher=KafkaPublisher(kafka_bootstrap, topic, ack_timeout=3),
                     live_events_jwks=JwksCache(jwks.url), answers=ledger)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert (await client.post("/live-events", data=signed(example("canvas", "course_created")))).status == 200
        for _ in range(3):
            assert (await client.post("/live-events", data=b'{"not": "signed"}')).status == 401
        assert (await client.get("/healthz")).status == 200  # not a Canvas route: not counted

        async def stored() -> dict[int, int]:
            async with engine.connect() as conn:
                rows = await conn.execute(text(
                    "select code, sum(answers) from canvas_stream.ingress_answers where replica = 'this-ingress' "
                    "group by code"))
                counts = {int(code): int(n) for code, n in rows}
            return counts if counts == {200: 1, 401: 3} else {}

        await wait_until(stored, timeout=15, message="the answers in canvas_stream.ingress_answers")
        body = (await (await client.get("/readyz")).json())
        assert "warnings" not in body
        async with engine.begin() as conn:  # another replica had a bad day: 2,797 errors
            await conn.execute(ingress_answers.insert().values(
                minute=datetime.now(UTC) - timedelta(hours=3), route="/live-events", replica="other", code=503,
                answers=2797, slow=0))

        async def warned() -> dict | None:
            response = await client.get("/readyz")
            payload = await response.json()
            return payload if response.status == 200 and payload.get("warnings") else None

        body = await wait_until(warned, timeout=15, message="/readyz warning about the error budget")
        assert body["canvas_budget"]["routes"]["/live-events"]["errors"] == 2800
        assert "2800 errors" in body["warnings"][0] and "28000" in body["warnings"][0]
        assert not any(route in ("/healthz", "/readyz") for route in body["canvas_budget"]["routes"])
    finally:
        await client.close()
