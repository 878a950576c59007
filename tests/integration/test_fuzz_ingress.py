"""Hostile input at the ingress: always a 4xx (never a 5xx or an exception), nothing published, no
JWKS hammering, slow clients cut off, no token or payload in the logs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canvas_stream.embedded.process import free_port
from canvas_stream.settings import Settings
from ingest.app import create_app
from ingest.jwks import JwksCache
from ingest.live_events import BadBody, classify_body
from tests.support.jwt_helpers import JwksServer, b64url, compact, jwk_for, rsa_key, sign, sign_rs
from tests.support.procs import Role, role_env

ISSUER = "https://live-events.canvas.instructure.com"
KID = "fuzz-current"
EVENT = {"metadata": {"event_name": "course_created", "event_time": "2024-01-01T00:00:00Z"},
         "body": {"course_id": "1", "name": "SECRET-PAYLOAD-MARKER"}}
MAX_BODY = 64 * 1024


class RecordingPublisher:
    """Stands in for Kafka: records what would have been published."""

    spool = None

    def __init__(self) -> None:
        self.published: list[tuple[bytes, bytes]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        return True

    def spool_stats(self) -> None:
        return None

    async def publish(self, key: bytes, value: bytes) -> None:
        self.published.append((key, value))


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "iat": now, "exp": now + 300, **EVENT, **extra}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ingress():
    async with JwksServer([jwk_for(rsa_key(KID), KID)]) as jwks:
        publisher = RecordingPublisher()
        app = create_app(
            Settings(kafka_bootstrap_servers="127.0.0.1:1", live_events_jwks_url=jwks.url, live_events_issuer=ISSUER,
                     max_body_bytes=MAX_BODY, live_events_leeway_seconds=300, live_events_allow_any_account=True),
            publisher=publisher,  # type: ignore[arg-type]
            live_events_jwks=JwksCache(jwks.url, refetch_cooldown=30),
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            ok = await client.post("/live-events", data=sign(claims(), rsa_key(KID), KID))
            assert ok.status == 200, await ok.text()  # the setup works: a good token is accepted
            publisher.published.clear()
            yield client, publisher, jwks
        finally:
            await client.close()


async def assert_refused(client: TestClient, publisher: RecordingPublisher, body: bytes | str) -> int:
    response = await client.post("/live-events", data=body)
    text = await response.text()
    assert 400 <= response.status < 500, (response.status, text[:300])
    assert not publisher.published
    assert "Traceback" not in text
    return response.status


def hostile_tokens() -> dict[str, str]:
    good = sign(claims(), rsa_key(KID), KID)
    head, payload, sig = good.split(".")
    public_pem = rsa_key(KID).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hmac

    hs_input = f"{b64url({'alg': 'HS256', 'kid': KID, 'typ': 'JWT'})}.{payload}".encode()
    hs_sig = hmac.new(public_pem, hs_input, "sha256").digest()
    flipped = sig[:-5] + ("A" if sig[-5] != "A" else "B") + sig[-4:]
    now = int(time.time())
    return {
        "forged signature": f"{head}.{payload}.{flipped}",
        "payload swapped under a valid signature": f"{head}.{b64url(claims(extra='x'))}.{sig}",
        "key from another JWKS, same kid": sign(claims(), rsa_key("attacker"), KID),
        "alg none": f"{b64url({'alg': 'none', 'kid': KID})}.{payload}.",
        "alg none with signature": compact({"alg": "none", "kid": KID}, claims(), b"x"),
        "HS256 signed with the public key": f"{hs_input.decode()}.{b64url(hs_sig)}",
        "unknown kid": sign(claims(), rsa_key(KID), "no-such-kid"),
        "absurd kid (huge)": sign_rs({"alg": "RS256", "kid": "k" * 5000}, claims(), rsa_key(KID)),
        "absurd kid (path)": sign(claims(), rsa_key(KID), "../../../../etc/passwd"),
        "absurd kid (nul, unicode)": sign_rs({"alg": "RS256", "kid": "\x00\u202e\U0001f4a3"}, claims(), rsa_key(KID)),
        "kid not a string": sign_rs({"alg": "RS256", "kid": ["k"]}, claims(), rsa_key(KID)),
        "no kid": sign(claims(), rsa_key(KID), None),
        "expired beyond leeway": sign(claims(exp=now - 3600, iat=now - 7200), rsa_key(KID), KID),
        "not yet valid": sign(claims(nbf=now + 3600), rsa_key(KID), KID),
        "wrong issuer": sign(claims(iss="https://evil.example"), rsa_key(KID), KID),
        "truncated in the signature": good[:-10],
        "truncated in the payload": good[: len(head) + 20],
        "only a header": head + "..",
        "deeply nested claims": sign_rs({"alg": "RS256", "kid": KID},
                                        ('{"a":' * 5000 + "1" + "}" * 5000).encode(), rsa_key(KID)),
        "claims a huge array": sign_rs({"alg": "RS256", "kid": KID}, ("[" + "1," * 20_000 + "1]").encode(),
                                       rsa_key(KID)),
        "claims not JSON": sign_rs({"alg": "RS256", "kid": KID}, b"\xff\xfe not json", rsa_key(KID)),
        "padded base64": f"{head}=.{payload}.{sig}",
    }


TOKENS = hostile_tokens()


@pytest.mark.parametrize("name", sorted(TOKENS))
async def test_hostile_tokens_get_4xx_and_nothing_is_published(ingress, name):
    client, publisher, _ = ingress
    status = await assert_refused(client, publisher, TOKENS[name])
    assert status in (400, 401)


@pytest.mark.parametrize("body", [
    b"\xff\xfe\xfd", b"{\"metadata\": \xff}", b"\x00" * 100, b"", b"   ", b'"', b'""', b"[]", b"null",
    b"{" * 50_000, b'{"a":' * 200 + b"1" + b"}" * 200, b"[" + b"1," * 30_000 + b"1]",
    b'{"metadata": {"event_name": "x"}, "body": {}}',  # unsigned JSON: refused by default
    b"a.b", b"a.b.c.d", b"\xe2\x80\xae.\xe2\x80\xae.x",
], ids=lambda b: repr(b[:20]))
async def test_malformed_bodies_get_4xx(ingress, body):
    client, publisher, _ = ingress
    await assert_refused(client, publisher, body)


async def test_bodies_over_the_limit_get_413(ingress):
    client, publisher, _ = ingress
    assert await assert_refused(client, publisher, b"a" * (MAX_BODY + 1)) == 413
    token = sign(claims(pad="x" * MAX_BODY), rsa_key(KID), KID)  # validly signed, but too big
    assert await assert_refused(client, publisher, token) == 413


b64chars = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=200)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@given(raw=st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_classify_body_only_raises_badbody(raw):
    with contextlib.suppress(BadBody):
        body = classify_body(raw)
        assert (body.token is None) != (body.payload is None)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.one_of(
    st.binary(max_size=3000),
    st.tuples(b64chars, b64chars, b64chars).map(".".join),
    st.builds(lambda v: json.dumps(v, allow_nan=True), json_values),
))
async def test_random_bodies_get_4xx(ingress, body):
    client, publisher, _ = ingress
    await assert_refused(client, publisher, body)


@FUZZ
@given(header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5u", "b64"]), json_values,
                              max_size=5),
       payload=json_values, signature=st.binary(max_size=300))
async def test_random_headers_and_signatures_get_4xx(ingress, header, payload, signature):
    client, publisher, _ = ingress
    token = compact(header, json.dumps(payload, allow_nan=True), signature)
    await assert_refused(client, publisher, token)


async def test_unknown_kids_refetch_the_jwks_at_most_once_per_cooldown(ingress):
    client, publisher, jwks = ingress
    before = jwks.requests
    tokens = [sign(claims(), rsa_key(KID), f"attacker-{i}") for i in range(300)]
    responses = await asyncio.gather(*(client.post("/live-events", data=t) for t in tokens))
    assert {r.status for r in responses} == {401}
    assert jwks.requests - before <= 1, jwks.requests - before
    assert not publisher.published


async def test_no_token_or_payload_in_info_logs(ingress, capfd):
    from canvas_stream.logs import configure_logging

    client, publisher, _ = ingress
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO", "json")
    try:
        good = sign(claims(), rsa_key(KID), KID)
        assert (await client.post("/live-events", data=good)).status == 200
        for token in (TOKENS["forged signature"], TOKENS["unknown kid"], TOKENS["expired beyond leeway"]):
            assert (await client.post("/live-events", data=token)).status == 401
        await client.post("/live-events", data=b'{"metadata": {"x": "SECRET-PAYLOAD-MARKER"}, "body": {}}')
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        publisher.published.clear()
    out, err = capfd.readouterr()
    text = out + err
    assert "rejected" in text  # the refusals were logged ...
    assert "eyJ" not in text and "SECRET-PAYLOAD-MARKER" not in text  # ... without tokens or payloads
    assert base64.urlsafe_b64encode(b'{"alg"').decode()[:6] not in text


# -- slow clients, against the real server settings of `canvas-stream ingress` ------------------

@pytest.fixture
def real_ingress():
    port = free_port()
    role = Role("ingress", role_env(
        PORT=str(port), HOST="127.0.0.1", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        KAFKA_ACK_TIMEOUT_SECONDS="0.5", HTTP_READ_TIMEOUT_SECONDS="2",
        LIVE_EVENTS_JWKS_URL=f"http://127.0.0.1:{free_port()}/jwks", LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true"))
    role.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert role.proc.poll() is None and time.monotonic() < deadline, role.output()
            time.sleep(0.2)
        yield port
    finally:
        role.stop()


def _slow_send(port: int, head: bytes, drip: bytes) -> tuple[float, bytes]:
    """Send ``head`` then ``drip`` one byte every 0.3 s; return when the server closes."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(0.3)
        for byte in drip:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            received += chunk
            if not chunk or b"\r\n\r\n" in received:  # closed, or answered
                break
            if time.monotonic() - started > 20:
                break
    return time.monotonic() - started, received


async def test_slowloris_headers_are_cut_off(real_ingress):
    elapsed, _ = await asyncio.to_thread(_slow_send, real_ingress, b"POST /live-events HTTP/1.1\r\nHost: x\r\n",
                                         b"X-Slow: " + b"a" * 200)
    assert elapsed < 10, elapsed


async def test_slow_bodies_are_cut_off(real_ingress):
    head = b"POST /live-events HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
    elapsed, received = await asyncio.to_thread(_slow_send, real_ingress, head, b"a" * 200)
    assert elapsed < 10, elapsed
    assert not received or received.startswith(b"HTTP/1.1 408"), received[:100]
