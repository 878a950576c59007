"""Tenant binding on the HTTPS route (real broker): correctly signed events of another root account
or another subscription are answered 403, never published, and counted by reason; the roles refuse
to start unbound."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from canvas_stream.embedded.process import free_port
from canvas_stream.records import record_from_bytes
from ingest.admin import create_admin_app
from tests.integration.test_ingress import CALIPER_EVENT, CANVAS_EVENT, claims
from tests.support.events import make_client
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key, sign
from tests.support.procs import Role, role_env
from tests.support.topics import published

KID = "2024-02-29"
OURS, OTHER = "OurRootAccountUuid000000000000000000000A", "OtherRootAccountUuid0000000000000000000B"
SUB, OTHER_SUB = "8aed1771-7b5d-4c90-bf09-3d256b7eeaee", "11111111-2222-4333-8444-555555555555"


def canvas_of(account: str) -> dict:
    event = copy.deepcopy(CANVAS_EVENT)
    event["metadata"]["root_account_uuid"] = account
    return event


def caliper_of(account: str | None) -> dict:
    event = copy.deepcopy(CALIPER_EVENT)
    if account is not None:
        event["data"][0]["actor"]["extensions"] = {"com.instructure.canvas": {"root_account_uuid": account}}
    return event


def token(event: dict, subscription: str | None) -> str:
    extra = {} if subscription is None else {"subscription": {"id": subscription, "owner_id": "owner"}}
    return sign(claims(event, **extra), rsa_key("current"), KID)


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("canvas_stream_live_events_refused_total",
                                     {"delivery": "https-signed", "reason": reason}) or 0.0


@pytest.fixture
async def jwks():
    async with JwksServer([jwk_for(rsa_key("current"), KID)]) as server:
        yield server


@pytest.fixture
async def bound(jwks, kafka_bootstrap, topic):
    """An ingress bound to our root account and our subscription."""
    client = await make_client(jwks.url, kafka_bootstrap, topic, live_events_allow_any_account=False,
                               live_events_root_account_uuids=OURS, live_events_subscription_ids=SUB)
    yield client
    await client.close()


@pytest.mark.parametrize(("event", "subscription", "reason"), [
    pytest.param(canvas_of(OTHER), SUB, "root account not listed", id="another-root-account-canvas"),
    pytest.param(caliper_of(OTHER), SUB, "root account not listed", id="another-root-account-caliper"),
    pytest.param(canvas_of(OURS), OTHER_SUB, "subscription not listed", id="another-subscription"),
    pytest.param(canvas_of(OURS), None, "token has no subscription claim", id="no-subscription-claim"),
])
async def test_correctly_signed_foreign_events_get_403_and_are_not_published(
        bound, kafka_bootstrap, topic, event, subscription, reason):
    before = refused(reason)
    response = await bound.post("/live-events", data=token(event, subscription))
    assert response.status == 403
    assert await response.json() == {"error": f"refused: {reason}"}
    assert refused(reason) == before + 1
    admin = TestClient(TestServer(create_admin_app(bound.server.app)))  # metrics are on the admin port
    await admin.start_server()
    try:
        metrics = await (await admin.get("/metrics")).text()
    finally:
        await admin.close()
    assert f'canvas_stream_live_events_refused_total{{delivery="https-signed",reason="{reason}"}}' in metrics
    assert await published(kafka_bootstrap, topic, 0) == []


async def test_our_events_are_published_with_their_subscription(bound, kafka_bootstrap, topic):
    for event in (canvas_of(OURS), caliper_of(OURS), caliper_of(None)):  # naming none: judged by the subscription
        response = await bound.post("/live-events", data=token(event, SUB))
        assert response.status == 200, await response.text()
    records = [record_from_bytes(m.value) for m in await published(kafka_bootstrap, topic, 3)]
    assert len(records) == 3
    assert {(r.delivery.method, r.delivery.subscription_id) for r in records} == {("https", SUB)}


async def test_unbound_ingress_refuses_in_process(jwks, kafka_bootstrap, topic):
    """Second line of defence: an app built without binding (the command would not start) refuses."""
    client = await make_client(jwks.url, kafka_bootstrap, topic, live_events_allow_any_account=False,
                               live_events_root_account_uuids=None, live_events_subscription_ids=None)
    try:
        response = await client.post("/live-events", data=token(canvas_of(OURS), SUB))
        assert response.status == 403
        assert await response.json() == {"error": "refused: no tenant binding configured"}
    finally:
        await client.close()
    assert await published(kafka_bootstrap, topic, 0) == []


def unbound_env(**extra: str) -> dict[str, str]:
    return role_env(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", SQS_QUEUE_URLS="http://127.0.0.1:1/0/q",
                    **extra)


@pytest.mark.parametrize("role", ["ingress", "sqs"])
def test_roles_refuse_to_start_unbound_with_exit_status_2(role):
    result = subprocess.run([sys.executable, "-m", "canvas_stream.cli", role], env=unbound_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "LIVE_EVENTS_ROOT_ACCOUNT_UUIDS" in result.stderr and "LIVE_EVENTS_SUBSCRIPTION_IDS" in result.stderr


async def test_ingress_for_lti_notices_only_needs_no_binding():
    port = free_port()
    role = Role("ingress", unbound_env(LIVE_EVENTS_ENABLED="false", PORT=str(port), HOST="127.0.0.1"))
    role.start()
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert role.proc is not None and role.proc.poll() is None, role.output()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, role.output()
                await asyncio.sleep(0.2)
            async with session.post(f"http://127.0.0.1:{port}/live-events", data="{}") as response:
                assert response.status == 404  # live events are off, so nothing to bind
    finally:
        role.stop()
