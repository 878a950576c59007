"""ingest.jwks: JWKS parsing, the per-URL cache (cooldown, rotation, stale keys, 503 vs 401)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from ingest.jwks import JwksCache, JwksError, KeyUnavailable, parse_jwks
from ingest.verify import KeySource, TokenPolicy, TokenRejected, verify_with
from tests.support.jwt_helpers import JwksServer, jwk_for, make_rsa_key, rsa_key, sign
from tests.support.keysets import StaticKeySet

ISS = "https://live-events.canvas.instructure.com"
POLICY = TokenPolicy(issuer=ISS, leeway=60)
PREV, CUR, NEXT, NEW = "2024-01-30T00:00:00Z", "2024-02-29T00:00:00Z", "2024-03-30T00:00:00Z", "2024-04-30T00:00:00Z"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def jwks(*kids: str) -> list[dict[str, Any]]:
    return [jwk_for(rsa_key(k), k) for k in kids]


def token(kid: str, key_name: str | None = None) -> str:
    now = int(time.time())
    return sign({"iss": ISS, "iat": now, "exp": now + 300, "body": {}}, rsa_key(key_name or kid), kid)


async def check(tok: str, keys: KeySource) -> dict[str, Any]:
    return (await verify_with(tok, keys, POLICY)).claims


# ---- parse_jwks ---------------------------------------------------------------------------------
def test_parse_jwks_keeps_only_rsa_signing_keys() -> None:
    ec_jwk = {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"}
    small = jwk_for(make_rsa_key(1024), "small")
    keys = [
        *jwks(PREV, CUR, NEXT),
        ec_jwk,
        jwk_for(rsa_key("enc"), "enc", use="enc"),
        jwk_for(rsa_key("oaep"), "oaep", alg="RSA-OAEP"),
        jwk_for(rsa_key("ops"), "ops", key_ops=["encrypt"]),
        {k: v for k, v in jwk_for(rsa_key("nokid"), "x").items() if k != "kid"},
        jwk_for(rsa_key("intkid"), 5),  # type: ignore[arg-type]
        small,
        {"kty": "RSA", "kid": "junk", "n": "!!!", "e": "AQAB"},
        "not a dict",
    ]
    parsed = parse_jwks(json.dumps({"keys": keys}).encode())
    assert list(parsed) == [PREV, CUR, NEXT]
    assert parsed[CUR].public_numbers() == rsa_key(CUR).public_key().public_numbers()


def test_parse_jwks_duplicate_kid_first_wins() -> None:
    keys = [jwk_for(rsa_key("a"), "dup"), jwk_for(rsa_key("b"), "dup")]
    parsed = parse_jwks(json.dumps({"keys": keys}).encode())
    assert parsed["dup"].public_numbers() == rsa_key("a").public_key().public_numbers()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"keys": {}}',
        b'{"nokeys": []}',
        b'{"keys": []}',
        b'{"keys": [{"kty": "EC"}]}',
        b"[" * 100_000,
    ],
)
def test_parse_jwks_garbage(data: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(data, max_bytes=10**6)


def test_parse_jwks_limits() -> None:
    doc = json.dumps({"keys": jwks(PREV)}).encode()
    with pytest.raises(JwksError, match="too large"):
        parse_jwks(doc, max_bytes=len(doc) - 1)
    with pytest.raises(JwksError, match="too many"):
        parse_jwks(json.dumps({"keys": jwks(PREV) * 21}).encode())


# ---- StaticKeySet -------------------------------------------------------------------------------
async def test_static_key_set() -> None:
    ks = StaticKeySet({"a": rsa_key("a").public_key()})
    assert ks.ready and ks.lookup("b") is None
    assert await ks.get_key("a") is ks.lookup("a")
    with pytest.raises(TokenRejected, match="unknown kid"):
        await ks.get_key("b")
    assert (await check(token("a"), ks))["iss"] == ISS
    with pytest.raises(TokenRejected, match="unknown kid"):
        await check(token("b"), ks)
    assert not StaticKeySet({}).ready


# ---- JwksCache against a real server ------------------------------------------------------------
async def test_rotation_previous_current_next() -> None:
    clock = Clock()
    async with JwksServer(jwks(PREV, CUR, NEXT)) as srv:
        cache = JwksCache(srv.url, clock=clock)
        try:
            for kid in (PREV, CUR, NEXT):
                await check(token(kid), cache)
            assert srv.requests == 1 and cache.ready and all(cache.lookup(k) for k in (PREV, CUR, NEXT))

            srv.keys = jwks(CUR, NEXT, NEW)  # monthly rotation
            clock.advance(31)
            assert (await check(token(NEW), cache))["iss"] == ISS
            assert srv.requests == 2
            for kid in (CUR, NEXT, NEW):
                await check(token(kid), cache)
            with pytest.raises(TokenRejected, match="unknown kid"):
                await check(token(PREV), cache)  # dropped; within cooldown so no fetch
            assert srv.requests == 2
        finally:
            await cache.close()


async def test_forged_token_with_colliding_kid() -> None:
    async with JwksServer(jwks(CUR)) as srv:
        cache = JwksCache(srv.url)
        try:
            with pytest.raises(TokenRejected, match="bad signature"):
                await check(token(CUR, key_name="attacker"), cache)
        finally:
            await cache.close()


async def test_unknown_kid_one_refetch_under_load() -> None:
    clock = Clock()
    async with JwksServer(jwks(CUR)) as srv:
        cache = JwksCache(srv.url, clock=clock, refetch_cooldown=30)
        try:
            await cache.get_key(CUR)
            assert srv.requests == 1
            clock.advance(31)
            srv.delay = 0.2  # keep the fetch in flight while the others arrive

            results = await asyncio.gather(*(cache.get_key(f"bogus-{i}") for i in range(50)), return_exceptions=True)
            assert all(isinstance(r, TokenRejected) and r.reason == "unknown kid" for r in results)
            assert srv.requests == 2

            srv.delay = 0
            for i in range(200):
                clock.advance(0.1)  # 20 s of traffic, still inside the cooldown
                with pytest.raises(TokenRejected):
                    await cache.get_key(f"again-{i}")
            assert srv.requests == 2
            clock.advance(11)
            with pytest.raises(TokenRejected):
                await cache.get_key("after-cooldown")
            assert srv.requests == 3
        finally:
            await cache.close()


async def test_stale_keys_served_when_jwks_fails() -> None:
    clock = Clock()
    async with JwksServer(jwks(CUR), cache_control="max-age=300") as srv:
        cache = JwksCache(srv.url, clock=clock)
        try:
            await check(token(CUR), cache)
            srv.fail = 500
            clock.advance(301)
            assert cache.stale
            await check(token(CUR), cache)  # served stale; refresh kicked off in background
            await asyncio.sleep(0.1)
            assert srv.requests == 2 and cache.last_error is not None
            assert cache.lookup(CUR) is not None and cache.ready
            clock.advance(31)
            with pytest.raises(TokenRejected, match="unknown kid"):  # a set is loaded: 401, not 503
                await cache.get_key("other")
            assert srv.requests == 3

            srv.fail = None  # recovery: next window refreshes
            clock.advance(31)
            assert cache.lookup(CUR) is not None
            await asyncio.sleep(0.1)
            assert srv.requests == 4 and not cache.stale and cache.last_error is None
        finally:
            await cache.close()


@pytest.mark.parametrize("failure", [500, 404, "hang"])
async def test_key_unavailable_when_never_loaded(failure: int | str) -> None:
    clock = Clock()
    async with JwksServer(jwks(CUR)) as srv:
        srv.fail = failure
        cache = JwksCache(srv.url, clock=clock, timeout=0.3)
        try:
            with pytest.raises(KeyUnavailable):
                await check(token(CUR), cache)
            assert not cache.ready
            with pytest.raises(KeyUnavailable):  # within cooldown: no new fetch
                await cache.get_key(CUR)
            assert srv.requests == 1
            srv.fail = None
            clock.advance(31)
            await check(token(CUR), cache)
            assert srv.requests == 2
        finally:
            await cache.close()


async def test_connection_refused_is_key_unavailable() -> None:
    async with JwksServer(jwks(CUR)) as srv:
        url = srv.url
    cache = JwksCache(url, timeout=1)
    try:
        with pytest.raises(KeyUnavailable):
            await cache.get_key(CUR)
    finally:
        await cache.close()


@pytest.mark.parametrize(
    ("header", "ttl"),
    [("max-age=10", 60), ("public, max-age=600", 600), ("max-age=864000", 86400), (None, 3600), ("no-store", 60)],
)
async def test_cache_control_honoured_and_clamped(header: str | None, ttl: float) -> None:
    clock = Clock()
    async with JwksServer(jwks(CUR), cache_control=header) as srv:
        cache = JwksCache(srv.url, clock=clock)
        try:
            await cache.get_key(CUR)
            clock.advance(ttl - 1)
            assert not cache.stale
            await cache.get_key(CUR)
            await asyncio.sleep(0)
            assert srv.requests == 1
            clock.advance(2)
            assert cache.stale
            await cache.get_key(CUR)  # stale: background refresh
            await asyncio.sleep(0.1)
            assert srv.requests == 2 and not cache.stale
        finally:
            await cache.close()


async def test_oversize_jwks_rejected() -> None:
    async with JwksServer(jwks(CUR)) as srv:
        srv.body = json.dumps({"keys": jwks(CUR), "pad": "x" * 200_000}).encode()
        cache = JwksCache(srv.url)
        try:
            with pytest.raises(KeyUnavailable):
                await cache.get_key(CUR)
            assert cache.last_error == "JWKS too large"
        finally:
            await cache.close()


async def test_redirects_not_followed() -> None:
    async with JwksServer(jwks(CUR)) as srv:
        cache = JwksCache(srv.base_url + "/redirect")
        try:
            with pytest.raises(KeyUnavailable):
                await cache.get_key(CUR)
            assert srv.requests == 0 and "302" in (cache.last_error or "")
        finally:
            await cache.close()


async def test_refresh_cooldown_and_force() -> None:
    clock = Clock()
    async with JwksServer(jwks(CUR)) as srv:
        cache = JwksCache(srv.url, clock=clock)
        try:
            assert await cache.refresh() is True
            assert await cache.refresh() is False
            assert await cache.refresh(force=True) is True
            assert srv.requests == 2
        finally:
            await cache.close()


async def test_cancelled_waiter_does_not_cancel_shared_fetch() -> None:
    async with JwksServer(jwks(CUR)) as srv:
        srv.delay = 0.2
        cache = JwksCache(srv.url)
        try:
            first = asyncio.ensure_future(cache.get_key(CUR))
            second = asyncio.ensure_future(cache.get_key(CUR))
            await asyncio.sleep(0.05)
            first.cancel()
            assert await second is not None
            assert srv.requests == 1
        finally:
            await cache.close()


async def test_custom_fetch_and_lookup_fast_path() -> None:
    calls: list[str] = []
    body = json.dumps({"keys": jwks(CUR)}).encode()

    async def fetch(url: str) -> tuple[bytes, dict[str, str]]:
        calls.append(url)
        return body, {"cache-control": "max-age=120"}

    cache = JwksCache("https://example.invalid/jwks", fetch=fetch)
    assert cache.lookup(CUR) is None and not cache.ready
    await check(token(CUR), cache)
    assert cache.lookup(CUR) is not None and calls == ["https://example.invalid/jwks"]
    await cache.close()
