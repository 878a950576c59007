"""JWKS key sets per URL: parse strictly, cache with Cache-Control, refetch rarely, serve stale.

Why: Canvas rotates live-event keys monthly (the JWKS lists previous, current and next) and LTI
platform keys at will. An unknown ``kid`` may be a rotation we have not seen yet, or an attacker
choosing kids to make us hammer the JWKS. So: one refetch per cooldown window whatever the request
rate, concurrent callers share the in-flight fetch, stale keys are kept when the JWKS is down,
and "no key set at all" is distinguishable (:class:`KeyUnavailable` -> 503, so Canvas retries)
from "this kid is not ours" (:class:`~ingest.verify.TokenRejected` -> 401). The cache only
supplies keys (it is a :class:`~ingest.verify.KeySource`); verifying is :mod:`ingest.verify`'s job.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from canvas_stream.errors import CanvasStreamError
from canvas_stream.metrics import JWKS_FETCH_FAILURES
from ingest.verify import MAX_KID_LEN, TokenRejected

__all__ = [
    "JwksCache",
    "JwksError",
    "KeyUnavailable",
    "parse_jwks",
]

MIN_RSA_BITS = 2048
MIN_TTL = 60.0
_RSA_SIG_ALGS = frozenset({"RS256", "RS384", "RS512"})
_MAX_AGE_RE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,12})\"?", re.I)
_NO_CACHE_RE = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s=])", re.I)

Fetch = Callable[[str], Awaitable[tuple[bytes, dict[str, str]]]]


class JwksError(CanvasStreamError, ValueError):
    """The JWKS document is unusable (not JSON, wrong shape, too big, no acceptable RSA key)."""


class KeyUnavailable(CanvasStreamError):
    """No key set could be obtained at all; answer 503 (not 401) so the sender retries."""


def _b64url_uint(value: Any, what: str) -> int:
    """Decode a JWK base64url unsigned integer (``n``/``e``); padding tolerated, junk refused."""
    if type(value) is not str or not value or len(value) > 2048:
        raise JwksError(f"bad '{what}'")
    raw = value.rstrip("=").encode("ascii", "replace")
    if re.fullmatch(rb"[A-Za-z0-9_-]+", raw) is None or len(raw) % 4 == 1:
        raise JwksError(f"bad '{what}'")
    try:
        data = binascii.a2b_base64(raw.translate(bytes.maketrans(b"-_", b"+/")) + b"=" * (-len(raw) % 4))
    except binascii.Error:
        raise JwksError(f"bad '{what}'") from None
    return int.from_bytes(data, "big")


def _rsa_key(jwk: dict[str, Any]) -> RSAPublicKey:
    """Build a public key from an RSA JWK, enforcing size and a sane exponent."""
    n = _b64url_uint(jwk.get("n"), "n")
    e = _b64url_uint(jwk.get("e"), "e")
    if n.bit_length() < MIN_RSA_BITS:
        raise JwksError("RSA key too small")
    if e < 3 or e % 2 == 0 or e.bit_length() > 64:
        raise JwksError("bad RSA exponent")
    try:
        return RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise JwksError("bad RSA key") from None


def parse_jwks(data: bytes, *, max_bytes: int = 128 * 1024, max_keys: int = 20) -> dict[str, RSAPublicKey]:
    """RFC 7517 ``{"keys": [...]}`` -> {kid: RSA public key}, keeping only RSA signing keys.

    Skipped (not fatal): non-RSA keys, ``use`` other than "sig", ``alg`` other than RS256/384/512,
    ``key_ops`` without "verify", keys without a usable kid, undersized or malformed RSA keys.
    On a duplicated kid the first entry wins. Fatal (JwksError): oversize, non-UTF-8/non-JSON, wrong
    shape, more than ``max_keys`` entries, or no usable key at all (so a cache keeps its old keys).
    """
    if len(data) > max_bytes:
        raise JwksError("JWKS too large")
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JwksError("JWKS is not valid JSON") from None
    if type(doc) is not dict or type(doc.get("keys")) is not list:
        raise JwksError("JWKS must be an object with a 'keys' list")
    entries = doc["keys"]
    if len(entries) > max_keys:
        raise JwksError("JWKS has too many keys")
    keys: dict[str, RSAPublicKey] = {}
    for jwk in entries:
        if type(jwk) is not dict or jwk.get("kty") != "RSA":
            continue
        kid = jwk.get("kid")
        if type(kid) is not str or not kid or len(kid) > MAX_KID_LEN or kid in keys:
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        if "alg" in jwk and jwk["alg"] not in _RSA_SIG_ALGS:
            continue
        ops = jwk.get("key_ops")
        if ops is not None and (type(ops) is not list or "verify" not in ops):
            continue
        try:
            keys[kid] = _rsa_key(jwk)
        except JwksError:
            continue
    if not keys:
        raise JwksError("JWKS has no usable RSA signing key")
    return keys


def _ttl_from_headers(headers: Mapping[str, str], default_ttl: float, max_ttl: float) -> float:
    """Cache lifetime from Cache-Control max-age, clamped to [60 s, max_ttl]."""
    cc = ""
    for name, value in headers.items():
        if name.lower() == "cache-control":
            cc = value
            break
    ttl = default_ttl
    m = _MAX_AGE_RE.search(cc)
    if m:
        ttl = float(m.group(1))
    elif _NO_CACHE_RE.search(cc):
        ttl = MIN_TTL
    return max(MIN_TTL, min(ttl, max_ttl))


class JwksCache:
    """Keys from one JWKS URL, fetched lazily and refetched at most once per cooldown window."""

    def __init__(
        self,
        url: str,
        *,
        fetch: Fetch | None = None,
        refetch_cooldown: float = 30.0,
        max_ttl: float = 86400,
        default_ttl: float = 3600,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 128 * 1024,
        max_keys: int = 20,
    ) -> None:
        self.url = url
        self._fetch: Fetch = fetch if fetch is not None else self._http_fetch
        self._cooldown = refetch_cooldown
        self._max_ttl = max_ttl
        self._default_ttl = default_ttl
        self._timeout = timeout
        self._clock = clock
        self._max_bytes = max_bytes
        self._max_keys = max_keys
        self._keys: dict[str, RSAPublicKey] = {}
        self._expires_at: float = float("-inf")
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None  # created on the first default fetch
        self.last_error: str | None = None

    # ---- cache state -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once a key set has been loaded (it may be stale)."""
        return bool(self._keys)

    @property
    def stale(self) -> bool:
        """True when the Cache-Control lifetime of the loaded set has passed (or nothing loaded)."""
        return self._clock() >= self._expires_at

    def lookup(self, kid: str) -> RSAPublicKey | None:
        """Cache-only, synchronous fast path. Serves stale keys; when stale and called inside a
        running loop it schedules a background refresh (still cooldown-limited)."""
        key = self._keys.get(kid)
        if key is not None and self.stale:
            self._refresh_in_background()
        return key

    async def get_key(self, kid: str) -> RSAPublicKey:
        """The key for ``kid``, refetching (cooldown-limited) when it is unknown.

        Raises TokenRejected("unknown kid") when a key set is loaded but lacks the kid, and
        KeyUnavailable when no key set could ever be loaded.
        """
        key = self.lookup(kid)
        if key is not None:
            return key
        await self._maybe_fetch(force=False)
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._keys:
            raise KeyUnavailable(f"JWKS unavailable: {self.last_error or 'not loaded'}")
        raise TokenRejected("unknown kid")

    async def refresh(self, *, force: bool = False) -> bool:
        """Refetch now (cooldown-limited unless ``force``); True when a fresh set was loaded."""
        return await self._maybe_fetch(force=force)

    async def close(self) -> None:
        """Cancel background refreshes and close the HTTP session."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- fetching ------------------------------------------------------------------------------
    def _refresh_in_background(self) -> None:
        if self._inflight is not None or not self._cooldown_over():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._maybe_fetch(force=False))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _cooldown_over(self) -> bool:
        return self._last_attempt is None or self._clock() - self._last_attempt >= self._cooldown

    async def _maybe_fetch(self, *, force: bool) -> bool:
        """Join the in-flight fetch, or start one if the cooldown allows; never raises."""
        task = self._inflight
        if task is None:
            if not force and not self._cooldown_over():
                return False
            self._last_attempt = self._clock()
            task = asyncio.get_running_loop().create_task(self._do_fetch())
            self._inflight = task
            task.add_done_callback(self._clear_inflight)
            task.add_done_callback(self._count_failure)
        # shield: one cancelled caller must not cancel the fetch the others are waiting on
        return await asyncio.shield(task)

    def _count_failure(self, task: asyncio.Task[bool]) -> None:
        if not task.cancelled() and task.result() is False:
            JWKS_FETCH_FAILURES.labels(self.url).inc()

    def _clear_inflight(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _do_fetch(self) -> bool:
        try:
            body, headers = await asyncio.wait_for(self._fetch(self.url), self._timeout)
            keys = parse_jwks(body, max_bytes=self._max_bytes, max_keys=self._max_keys)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self.last_error = "timeout"
            return False
        except JwksError as exc:
            self.last_error = str(exc)
            return False
        except Exception as exc:  # network errors, HTTP status, a custom fetch's failures
            self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return False
        self._keys = keys
        self._expires_at = self._clock() + _ttl_from_headers(headers, self._default_ttl, self._max_ttl)
        self.last_error = None
        return True

    async def _http_fetch(self, url: str) -> tuple[bytes, dict[str, str]]:
        """GET the JWKS with one pooled session: no redirects, size-capped body, 200 only."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"Accept": "application/json", "User-Agent": "canvas-stream-jwks/1"},
            )
        async with self._session.get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise JwksError(f"JWKS HTTP status {resp.status}")
            length = resp.content_length
            if length is not None and length > self._max_bytes:
                raise JwksError("JWKS too large")
            chunks: list[bytes] = []
            size = 0
            while size <= self._max_bytes:
                chunk = await resp.content.read(self._max_bytes + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > self._max_bytes:
                raise JwksError("JWKS too large")
            return b"".join(chunks), dict(resp.headers)

