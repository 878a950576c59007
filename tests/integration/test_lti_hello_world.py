"""The hello-world check end to end: `canvas-stream notice-handlers set` records the subscription in
PostgreSQL; until an LtiHelloWorldNotice for that deployment is stored, the ingress's /readyz shows
the deployment overdue (a warning, still 200), the gauge counts it and `notice-handlers list` says
so; once the notice went through the ingress, the broker and a worker, all three say received.

Real CLI processes against the stand-in platform of test_lti_client, a real broker, a real worker.
"""

from __future__ import annotations

import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream.settings import Settings
from ingest.app import create_app
from ingest.hello_world import HelloWorldWatch
from ingest.jwks import JwksCache
from ingest.publish import KafkaPublisher
from tests.integration.test_lti_client import TOOL_HOST, cli, lti_env
from tests.integration.test_lti_client import platform as platform  # the fixtures, re-exported
from tests.integration.test_lti_client import tool_key as tool_key
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.lti import CLIENT_ID, ISSUER, KID, batch, jwt_of, notice
from tests.support.procs import Role, running, wait_until, worker_env

WAIT = 3.0  # LTI_HELLO_WORLD_WAIT_SECONDS


def overdue_gauge() -> float | None:
    return REGISTRY.get_sample_value("canvas_stream_lti_hello_world_overdue_deployments")


@pytest.fixture
async def lti_jwks():
    async with JwksServer([jwk_for(rsa_key("lti-current"), KID)]) as server:
        yield server


async def test_hello_world_overdue_until_received(platform, tool_key, lti_jwks, topic,
                                                  kafka_bootstrap, migrated_database_url):
    deployment = platform.deployment = f"106:{uuid.uuid4().hex}"  # its own: other tests store hello worlds too
    env = {**lti_env(platform, tool_key[0]), "DATABASE_URL": migrated_database_url,
           "LTI_HELLO_WORLD_WAIT_SECONDS": str(WAIT)}
    handler = f"https://{TOOL_HOST}/lti/notices/{deployment}"
    rc, out, err = await cli("notice-handlers", "set", "--notice-type", "LtiHelloWorldNotice", "--handler", handler,
                             env=env)
    assert rc == 0, err
    assert "the ingress warns" in out and "canvas_stream_lti_hello_world_overdue_deployments" in out

    engine = create_async_engine(migrated_database_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT handler, pns_url, set_at, now() - set_at AS age FROM canvas_stream.lti_handler_subscriptions "
                "WHERE deployment_id = :d AND notice_type = 'LtiHelloWorldNotice'"), {"d": deployment})).one()
        assert (row.handler, row.pns_url) == (handler, platform.pns_url)
        assert 0 <= row.age.total_seconds() < 120
    finally:
        await engine.dispose()

    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic, lti_client_id=CLIENT_ID,
                        lti_platform_issuer=ISSUER, lti_platform_jwks_url=lti_jwks.url, database_url=None,
                        lti_deployment_ids=None, live_events_enabled=False)
    watch = HelloWorldWatch(migrated_database_url, WAIT, every=0.2)
    app = create_app(settings, publisher=KafkaPublisher(kafka_bootstrap, topic, ack_timeout=5),
                     live_events_jwks=JwksCache(lti_jwks.url), hello_world=watch)
    client = TestClient(TestServer(app))
    await client.start_server()
    worker = Role("worker", worker_env(migrated_database_url, kafka_bootstrap, topic))
    try:
        async def readyz() -> dict:
            response = await client.get("/readyz")
            assert response.status == 200  # a warning, never a status change
            return await response.json()

        async def overdue() -> list:
            return [d for d in (await readyz())["lti_hello_world"]["overdue"] if d["deployment_id"] == deployment]

        [entry] = await wait_until(overdue, timeout=30, message="deployment overdue in /readyz")
        assert entry["state"] == "overdue" and entry["hello_world_received_at"] is None
        body = await readyz()
        assert any(deployment in w and "NOT RECEIVED" in w for w in body["warnings"]), body
        assert body["lti_nonces"] == "memory only (DATABASE_URL not set)"  # this app was given no nonce store
        assert (overdue_gauge() or 0) >= 1

        rc, out, err = await cli("notice-handlers", "list", env=env)
        assert rc == 0, err
        assert out.splitlines()[-1].startswith("hello world: NOT RECEIVED: handler set at"), out

        # What Canvas sends at once after the PUT (here: late), through the ingress, broker and worker.
        hello = notice("LtiHelloWorldNotice", deployment=deployment)
        with running(worker):
            response = await client.post(f"/lti/notices/{deployment}", data=batch(jwt_of(hello)))
            assert response.status == 200, await response.text()

            async def received() -> bool:
                return not await overdue() and not (await readyz()).get("warnings")

            await wait_until(received, timeout=90, message=f"hello world received; worker log:\n{worker.output()}")
        assert overdue_gauge() == 0
        rc, out, err = await cli("notice-handlers", "list", env=env)
        assert rc == 0 and out.splitlines()[-1].startswith("hello world: received at"), (out, err)

        # Unsubscribing ends the check.
        rc, out, err = await cli("notice-handlers", "set", "--notice-type", "LtiHelloWorldNotice", "--handler", "",
                                 env=env)
        assert rc == 0 and "unsubscribed" in out, err
        rc, out, err = await cli("notice-handlers", "list", env=env)
        assert "hello world: not checked (no LtiHelloWorldNotice subscription recorded" in out, out
    finally:
        worker.stop()
        await client.close()
