"""The hostile catalogue against the real `canvas-stream ingress` process (real broker, real PostgreSQL):
correctly signed events of another root account or subscription (403, never published, so never
stored), a replayed LTI notice nonce (rejected, across replicas), a hanging JWKS endpoint and a
hanging broker (503 within RESPONSE_DEADLINE_SECONDS, measured), a slow body (answered within it).

The forged, malformed and oversized inputs are in test_fuzz_ingress.py; the binding's decision table
in test_tenant_binding.py, whose event builders these cases reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from canvas_stream.embedded.process import free_port
from canvas_stream.records import record_from_bytes
from tests.integration.test_fuzz_ingress import _slow_send
from tests.integration.test_tenant_binding import KID, OTHER, OTHER_SUB, OURS, SUB, caliper_of, canvas_of, token
from tests.support.events import ISSUER as LIVE_ISSUER
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.lti import CLIENT_ID, DEPLOYMENT, ISSUER, batch, jwt_of, nid, notice
from tests.support.lti import KID as LTI_KID
from tests.support.procs import Role, role_env
from tests.support.topics import created_topic, published

DEADLINE = 2.0  # RESPONSE_DEADLINE_SECONDS of every ingress here
SLACK = 1.0  # scheduling on a loaded 2-core machine; still far below Canvas's 15 s


@contextlib.asynccontextmanager
async def ingress(**env: str) -> AsyncIterator[str]:
    """A real `canvas-stream ingress` process; yields its base URL once /healthz answers."""
    port = free_port()
    environment = role_env(PORT=str(port), HOST="127.0.0.1", RESPONSE_DEADLINE_SECONDS=str(DEADLINE),
                           LIVE_EVENTS_ISSUER=LIVE_ISSUER, LTI_CLIENT_ID=CLIENT_ID, LTI_PLATFORM_ISSUER=ISSUER,
                           JWKS_REFETCH_COOLDOWN_SECONDS="0", **env)
    if "DATABASE_URL" not in env:  # only what the case gives it, never the developer's own database
        environment.pop("DATABASE_URL", None)
    role = Role("ingress", environment)
    role.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                assert role.proc is not None and role.proc.poll() is None, role.output()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                assert time.monotonic() < deadline, role.output()
                await asyncio.sleep(0.2)
        yield base
    finally:
        role.stop()


async def timed_post(url: str, body: str | bytes) -> tuple[int, Any, float]:
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=30)) as response:
            doc = await response.json(content_type=None)
            return response.status, doc, time.monotonic() - started


@pytest.fixture(scope="module")
async def keys():
    """Canvas's live-events key set and the LTI platform's, both answering."""
    async with JwksServer([jwk_for(rsa_key("current"), KID)]) as live, \
            JwksServer([jwk_for(rsa_key("lti-current"), LTI_KID)]) as lti:
        yield live, lti


@pytest.fixture(scope="module")
async def topic(kafka_bootstrap):
    return await created_topic(kafka_bootstrap, f"t-hostile-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def bound_env(keys, kafka_bootstrap, topic, migrated_database_url) -> dict[str, str]:
    live, lti = keys
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic, "DATABASE_URL": migrated_database_url,
            "LIVE_EVENTS_JWKS_URL": live.url, "LTI_PLATFORM_JWKS_URL": lti.url,
            "LIVE_EVENTS_ROOT_ACCOUNT_UUIDS": OURS, "LIVE_EVENTS_SUBSCRIPTION_IDS": SUB}


@pytest.fixture(scope="module")
async def bound(bound_env) -> AsyncIterator[str]:
    """A production-like ingress bound to our root account and subscription."""
    async with ingress(**bound_env) as base:
        yield base


# -- foreign tenants -----------------------------------------------------------------------------

FOREIGN = [
    pytest.param(canvas_of(OTHER), SUB, "root account not listed", id="another-root-account-canvas"),
    pytest.param(caliper_of(OTHER), SUB, "root account not listed", id="another-root-account-caliper"),
    pytest.param(canvas_of(OURS), OTHER_SUB, "subscription not listed", id="another-subscription"),
]


@pytest.mark.parametrize(("event", "subscription", "reason"), FOREIGN)
async def test_correctly_signed_foreign_tenant_gets_403_and_is_never_published(
        bound, kafka_bootstrap, topic, event, subscription, reason):
    status, doc, _ = await timed_post(f"{bound}/live-events", token(event, subscription))
    assert (status, doc) == (403, {"error": f"refused: {reason}"})
    # Ours, sent after, is the only record on the topic: the refused one was never published, so no
    # worker can ever store it.
    marker = canvas_of(OURS)
    marker["body"]["name"] = f"control-{uuid.uuid4()}"
    status, doc, _ = await timed_post(f"{bound}/live-events", token(marker, SUB))
    assert status == 200, doc
    records = [record_from_bytes(m.value) for m in await published(kafka_bootstrap, topic, 1_000, timeout=3)]
    names = [r.payload.get("body", {}).get("name") for r in records if r.source == "live_event"]
    assert marker["body"]["name"] in names
    assert not [r for r in records if (r.delivery and r.delivery.subscription_id == OTHER_SUB)
                or json.dumps(r.payload).find(OTHER) >= 0]


# -- LTI notice replay -----------------------------------------------------------------------------

async def test_a_replayed_notice_nonce_is_rejected_on_every_replica(bound, bound_env, kafka_bootstrap, topic):
    original = notice("LtiContextCopyNotice")
    replay = notice("LtiContextCopyNotice", nonce=original["nonce"])  # same nonce, another notice id
    url = f"/lti/notices/{DEPLOYMENT}"
    status, doc, _ = await timed_post(bound + url, batch(jwt_of(original)))
    assert (status, [r["status"] for r in doc["results"]]) == (200, ["accepted"]), doc

    async with ingress(**bound_env) as other_replica:  # shares only PostgreSQL with the first
        for base in (bound, other_replica):
            status, doc, _ = await timed_post(base + url, batch(jwt_of(replay)))
            [result] = doc["results"]
            assert status == 200, doc  # permanently rejected: nothing to retry
            assert (result["status"], result["notice_id"]) == ("rejected", nid(replay)), doc
            assert "nonce already used by another notice" in result["error"]
        status, doc, _ = await timed_post(other_replica + url, batch(jwt_of(original)))
        assert doc["results"][0]["status"] in ("accepted", "duplicate"), doc  # the same notice is no replay

    status, doc, _ = await timed_post(bound + url, batch(jwt_of(original)))
    assert [r["status"] for r in doc["results"]] == ["duplicate"], doc  # as before: same id, same replica
    ids = [r.payload.get("https://purl.imsglobal.org/spec/lti/claim/notice", {}).get("id")
           for r in map(record_from_bytes, (m.value for m in await published(kafka_bootstrap, topic, 1_000, 3)))]
    assert nid(original) in ids and nid(replay) not in ids


# -- slow senders ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/live-events", f"/lti/notices/{DEPLOYMENT}"])
async def test_a_slow_body_is_answered_within_the_deadline(bound, path):
    """HTTP_READ_TIMEOUT_SECONDS stays at its default (15 s): the response deadline bounds the body."""
    port = int(bound.rsplit(":", 1)[1])
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n".encode()
    elapsed, received = await asyncio.to_thread(_slow_send, port, head, b"a" * 200)
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert elapsed < DEADLINE + SLACK, elapsed


# -- hanging dependencies ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def hanging_jwks():
    async with JwksServer([]) as server:
        server.fail = "hang"
        yield server


@pytest.fixture(scope="module")
def black_hole() -> Callable[[], str]:
    """host:port of a socket that completes TCP handshakes and never answers (a hung broker)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield lambda: f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def test_a_hanging_jwks_endpoint_gets_503_within_the_deadline(hanging_jwks, kafka_bootstrap, topic):
    async with ingress(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic,
                       LIVE_EVENTS_JWKS_URL=hanging_jwks.url, LTI_PLATFORM_JWKS_URL=hanging_jwks.url,
                       LIVE_EVENTS_ROOT_ACCOUNT_UUIDS=OURS) as base:
        for path, body in (("/live-events", token(canvas_of(OURS), SUB)),
                           (f"/lti/notices/{DEPLOYMENT}", batch(jwt_of(notice("LtiHelloWorldNotice"))))):
            status, doc, elapsed = await timed_post(base + path, body)
            assert status == 503, (path, doc)
            assert "deadline" in doc["error"], doc
            assert DEADLINE - 0.1 <= elapsed < DEADLINE + SLACK, (path, elapsed)
    assert hanging_jwks.requests >= 1  # the keys were really asked for, and hung


async def test_a_hanging_broker_gets_503_within_the_deadline(keys, black_hole):
    live, lti = keys
    async with ingress(KAFKA_BOOTSTRAP_SERVERS=black_hole(), KAFKA_ACK_TIMEOUT_SECONDS="5",
                       LIVE_EVENTS_JWKS_URL=live.url, LTI_PLATFORM_JWKS_URL=lti.url,
                       LIVE_EVENTS_ROOT_ACCOUNT_UUIDS=OURS) as base:
        status, doc, elapsed = await timed_post(f"{base}/live-events", token(canvas_of(OURS), SUB))
        assert (status, doc) == (503, {"error": "event store did not acknowledge within the response deadline; "
                                                "retry later"})
        assert elapsed < DEADLINE + SLACK, elapsed
        hello = notice("LtiHelloWorldNotice")
        status, doc, elapsed = await timed_post(f"{base}/lti/notices/{DEPLOYMENT}", batch(jwt_of(hello)))
        assert status == 503 and elapsed < DEADLINE + SLACK, (doc, elapsed)
        [result] = doc["results"]  # per notice: which one is not known to be stored
        assert (result["status"], result["notice_id"]) == ("failed", nid(hello))
        assert "response deadline" in result["error"]
