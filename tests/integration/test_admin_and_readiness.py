"""Readiness reflects what is configured, and the admin app serves what the public port does not."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from canvas_stream.embedded.process import free_port
from canvas_stream.settings import Settings
from ingest.admin import create_admin_app
from ingest.app import create_app
from ingest.jwks import JwksCache
from ingest.publish import KafkaPublisher, ensure_topic
from tests.support.events import ISSUER, example, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key


async def ingress(bootstrap: str, topic: str, jwks_url: str, **overrides) -> TestClient:
    overrides.setdefault("live_events_allow_any_account", True)  # binding: test_tenant_binding.py
    settings = Settings(kafka_bootstrap_servers=bootstrap, kafka_topic=topic, live_events_jwks_url=jwks_url,
                        live_events_issuer=ISSUER, kafka_ack_timeout_seconds=3, **overrides)
    app = create_app(settings, publisher=KafkaPublisher(bootstrap, topic, ack_timeout=3),
                     live_events_jwks=JwksCache(jwks_url))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_an_ingress_for_lti_notices_only_is_ready_without_live_events_keys(kafka_bootstrap, unique_topic):
    topic = f"{unique_topic}lti-only"
    await ensure_topic(kafka_bootstrap, topic, 1)
    unreachable = f"http://127.0.0.1:{free_port()}/jwks"
    lti_only = await ingress(kafka_bootstrap, topic, unreachable, live_events_enabled=False)
    both = await ingress(kafka_bootstrap, topic, unreachable)
    try:
        response = await lti_only.get("/readyz")
        assert response.status == 200, await response.text()
        assert (await response.json()) == {"broker": "ok", "live_events_keys": "disabled"}
        assert (await lti_only.post("/live-events", data=b"x")).status == 404  # the route is not served
        response = await both.get("/readyz")  # serving live events without their keys: not ready
        assert response.status == 503
        assert (await response.json())["live_events_keys"] == "unavailable"
    finally:
        await lti_only.close()
        await both.close()


async def test_admin_port_serves_metrics_status_and_readiness(kafka_bootstrap, unique_topic):
    topic = f"{unique_topic}admin"
    await ensure_topic(kafka_bootstrap, topic, 1)
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:
        public = await ingress(kafka_bootstrap, topic, jwks.url, database_url=None)
        admin = TestClient(TestServer(create_admin_app(public.server.app)))
        await admin.start_server()
        try:
            assert (await public.post("/live-events", data=signed(example("canvas", "course_created")))).status == 200
            assert (await public.post("/live-events", data=b'{"a": 1}')).status == 401
            assert (await public.get("/metrics")).status == 404  # not on the public port
            assert (await public.get("/status")).status == 404

            metrics = await (await admin.get("/metrics")).text()
            for code in ("200", "401"):
                assert (f'canvas_stream_ingress_request_duration_seconds_bucket{{code="{code}",le="30.0",'
                        f'route="/live-events"}}') in metrics
            assert "canvas_stream_ingress_seconds" not in metrics  # the old, unconventional name is gone
            assert "canvas_stream_ingress_responses_total" not in metrics

            response = await admin.get("/readyz")
            assert response.status == 200 and (await response.json())["broker"] == "ok"
            response = await admin.get("/status")  # no DATABASE_URL: the page says so, and still renders
            page = await response.text()
            assert response.status == 200 and response.content_type == "text/html"
            assert "DATABASE_URL is not set" in page and 'data-figure="worker-lag-total"' in page
        finally:
            await admin.close()
            await public.close()
