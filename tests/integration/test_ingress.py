"""The ingress over real HTTP and a real broker: what is accepted, what is refused, what is published."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from canvas_stream.records import record_from_bytes
from tests.support.events import ISSUER, example, make_client
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key, sign
from tests.support.topics import published

CANVAS_EVENT = {
    "metadata": {
        "event_name": "course_created",
        "event_time": "2019-11-01T19:11:05.222Z",
        "context_type": "Course",
        "context_id": "21070000000000565",
        "producer": "canvas",
    },
    "body": {"course_id": "21070000000000565", "name": "Biology 101", "workflow_state": "claimed"},
}
CALIPER_EVENT = {
    "sensor": "http://oxana.instructure.com/",
    "sendTime": "2019-11-16T02:09:06.543Z",
    "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p1",
    "data": [{"id": "urn:uuid:" + str(uuid.uuid4()), "type": "SessionEvent", "action": "LoggedIn",
              "actor": {"id": "urn:instructure:canvas:user:21070000000000001", "type": "Person"},
              "eventTime": "2019-11-01T19:11:01.335Z"}],
}


def claims(event: dict, **extra) -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "iat": now, "exp": now + 300, **event, **extra}


@pytest.fixture
async def jwks():
    keys = [jwk_for(rsa_key("previous"), "2024-01-30"), jwk_for(rsa_key("current"), "2024-02-29"),
            jwk_for(rsa_key("next"), "2024-03-30")]
    async with JwksServer(keys) as server:
        yield server


@pytest.fixture
async def client(jwks, kafka_bootstrap, topic):
    c = await make_client(jwks.url, kafka_bootstrap, topic)
    yield c
    await c.close()


async def test_signed_events_of_both_formats_are_published_with_their_verification(client, kafka_bootstrap, topic):
    token = sign(claims(CANVAS_EVENT), rsa_key("current"), "2024-02-29")
    response = await client.post("/live-events", data=token, headers={"Content-Type": "text/plain"})
    assert response.status == 200, await response.text()
    assert (await response.json())["format"] == "canvas"
    # Canvas sometimes wraps the token in double quotes; the previous and next keys verify too.
    quoted = '"' + sign(claims(CALIPER_EVENT), rsa_key("previous"), "2024-01-30") + '"'
    response = await client.post("/live-events", data=quoted, headers={"Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    assert (await response.json())["format"] == "caliper"
    response = await client.post("/live-events", data=sign(claims(CANVAS_EVENT), rsa_key("next"), "2024-03-30"))
    assert response.status == 200

    messages = await published(kafka_bootstrap, topic, 3)
    records = [record_from_bytes(m.value) for m in messages]
    assert sorted(r.format for r in records) == ["caliper", "canvas", "canvas"]
    canvas = next(r for r in records if r.format == "canvas")
    assert canvas.verification.signed and canvas.verification.issuer == ISSUER
    assert canvas.verification.kid in {"2024-02-29", "2024-03-30"}
    assert canvas.payload["body"]["name"] == "Biology 101"
    # One copy of the event per record: the signed payload's own text, and no second copy in a raw token.
    assert canvas.raw is None
    value = next(m.value for m in messages if b'"canvas"' in m.value)
    assert value.count(b"Biology 101") == 1
    assert json.loads(canvas.payload_json) == canvas.payload
    assert canvas.payload_json in value
    keys = {m.key for m in messages}
    assert b"course:21070000000000565" in keys  # events about one course share a partition


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda: sign(claims(CANVAS_EVENT), rsa_key("intruder"), "2024-02-29"), id="forged"),
        pytest.param(lambda: sign(claims(CANVAS_EVENT, exp=int(time.time()) - 7200), rsa_key("current"),
                                  "2024-02-29"), id="expired"),
        pytest.param(lambda: sign(claims(CANVAS_EVENT, iss="https://evil.example"), rsa_key("current"),
                                  "2024-02-29"), id="wrong-issuer"),
        pytest.param(lambda: sign(claims(CANVAS_EVENT), rsa_key("current"), "no-such-kid"), id="unknown-kid"),
        pytest.param(lambda: sign(claims(CANVAS_EVENT), None, "2024-02-29", alg="none"), id="alg-none"),
        pytest.param(lambda: _tampered(), id="tampered"),
    ],
)
async def test_bad_tokens_get_401_and_nothing_is_published(client, kafka_bootstrap, topic, make_token):
    token = make_token()
    response = await client.post("/live-events", data=token)
    assert response.status == 401
    text = await response.text()
    assert token not in text and token.split(".")[1] not in text
    assert await published(kafka_bootstrap, topic, 0) == []


def _tampered() -> str:
    token = sign(claims(CANVAS_EVENT), rsa_key("current"), "2024-02-29")
    header, _, signature = token.split(".")
    other = sign(claims({**CANVAS_EVENT, "body": {"course_id": "1", "name": "Changed"}}), rsa_key("current"),
                 "2024-02-29")
    return f"{header}.{other.split('.')[1]}.{signature}"


async def test_hs256_signed_with_the_public_key_is_refused(client, kafka_bootstrap, topic):
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = rsa_key("current").public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "kid": "2024-02-29", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(CANVAS_EVENT)).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    response = await client.post("/live-events", data=f"{head}.{body}.{b64(mac)}")
    assert response.status == 401


async def test_unsigned_json_is_refused_unless_allowed(client, jwks, kafka_bootstrap, topic):
    response = await client.post("/live-events", json=CANVAS_EVENT)
    assert response.status == 401
    allowing = await make_client(jwks.url, kafka_bootstrap, topic, live_events_allow_unsigned=True)
    try:
        response = await allowing.post("/live-events", json=CANVAS_EVENT)
        assert response.status == 200
        [message] = await published(kafka_bootstrap, topic, 1)
        record = record_from_bytes(message.value)
        assert record.verification.signed is False and record.payload == CANVAS_EVENT
        assert message.value.count(b"Biology 101") == 1 and record.raw is None
    finally:
        await allowing.close()


async def test_garbage_and_oversize_bodies(client):
    assert (await client.post("/live-events", data=b"")).status == 400
    assert (await client.post("/live-events", data=b"\xff\xfe not a token")).status == 400
    assert (await client.post("/live-events", data=b"{" * 10_000)).status == 400
    response = await client.post("/live-events", data=b"x" * (1024 * 1024 + 10))
    assert response.status == 413
    assert "Traceback" not in await response.text()


async def test_json_bomb_is_refused_without_parsing(jwks, kafka_bootstrap, topic):
    allowing = await make_client(jwks.url, kafka_bootstrap, topic, live_events_allow_unsigned=True)
    try:
        response = await allowing.post("/live-events", data=b"{\"a\":" * 5000 + b"1" + b"}" * 5000)
        assert response.status == 400
        assert "nested" in (await response.json())["error"]
    finally:
        await allowing.close()


async def test_an_event_the_broker_refuses_for_its_size_is_413_not_503(jwks, kafka_bootstrap, topic):
    """503 would have Canvas retry an event that can never get in; the answer says why instead."""
    allowing = await make_client(jwks.url, kafka_bootstrap, topic, live_events_allow_unsigned=True,
                                 max_body_bytes=8 * 1024 * 1024)
    try:
        event = example("canvas", "course_created")
        event["body"]["name"] = "x" * 1_100_000  # over KAFKA_MAX_RECORD_BYTES (1,000,000), which tansu alone would take
        response = await allowing.post("/live-events", data=json.dumps(event))
        assert response.status == 413, await response.text()
        assert (await response.json())["error"] == "event too large for the event store"
    finally:
        await allowing.close()


async def test_health_and_readiness(client, jwks):
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert response.status == 200, await response.text()
    assert (await response.json()) == {"broker": "ok", "live_events_keys": "ok"}


async def test_unreachable_broker_gives_503_not_a_lost_event(jwks, unique_topic):
    from canvas_stream.embedded.process import free_port

    dead = f"127.0.0.1:{free_port()}"
    c = await make_client(jwks.url, dead, unique_topic)
    try:
        token = sign(claims(CANVAS_EVENT), rsa_key("current"), "2024-02-29")
        response = await c.post("/live-events", data=token)
        assert response.status == 503
        assert "retry" in (await response.json())["error"]
        assert (await c.get("/readyz")).status == 503
    finally:
        await c.close()


async def test_unreachable_jwks_gives_503_so_canvas_retries(kafka_bootstrap, topic):
    from canvas_stream.embedded.process import free_port

    c = await make_client(f"http://127.0.0.1:{free_port()}/jwks", kafka_bootstrap, topic)
    try:
        token = sign(claims(CANVAS_EVENT), rsa_key("current"), "2024-02-29")
        response = await c.post("/live-events", data=token)
        assert response.status == 503
    finally:
        await c.close()
