"""The tool side of LTI PNS: an LTI Advantage token, then GET/PUT the platform's notice handlers.

Why this shape: Canvas authenticates service calls with a client-credentials grant whose client
assertion is a JWT signed by the tool's key (RFC 7523); tokens last an hour, so they are cached
per (token URL, client id, scopes) until one minute before expiry, and refreshed once on a 401.
Errors carry the platform's own message (``errors.message`` or OAuth ``error_description``) and
never the token or assertion.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from canvas_stream.errors import CanvasStreamError
from canvas_stream.keys import thumbprint

PNS_SCOPE = "https://purl.imsglobal.org/spec/lti/scope/noticehandlers"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300
TOKEN_MARGIN = 60
MAX_RESPONSE_BYTES = 1024 * 1024


class PlatformError(CanvasStreamError):
    """The platform refused a call (or answered nonsense); the message is safe to print."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float


def build_assertion(
    key: rsa.RSAPrivateKey, client_id: str, token_url: str, *, kid: str | None = None, now: float | None = None
) -> str:
    """The signed client assertion: iss = sub = client_id, aud = the token URL, 5 min, unique jti."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid or thumbprint(key.public_key())})


def platform_message(status: int, body: bytes) -> str:
    """The human part of an error answer: Canvas ``errors.message`` (object or list), OAuth
    ``error_description``/``error``, else a short text excerpt."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    message: str | None = None
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, dict):
            message = errors.get("message")
        elif isinstance(errors, list) and errors and isinstance(errors[0], dict):
            message = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message"))
        message = message or doc.get("error_description") or doc.get("message") or doc.get("error")
    if not isinstance(message, str) or not message:
        text = body[:300].decode("utf-8", "replace").strip()
        message = text or "no details"
    return f"HTTP {status}: {message[:500]}"


class LtiServiceClient:
    """Calls LTI Advantage services with a cached access token (one instance per CLI run)."""

    def __init__(
        self,
        *,
        client_id: str,
        token_url: str,
        private_key: rsa.RSAPrivateKey,
        kid: str | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.client_id = client_id
        self.token_url = token_url
        self._key = private_key
        self._kid = kid
        self._timeout = timeout
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._session: aiohttp.ClientSession | None = None
        self.token_requests = 0

    async def __aenter__(self) -> LtiServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": "canvas-stream-lti/1"},
            )
        return self._session

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        body = await resp.content.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise PlatformError(f"HTTP {resp.status}: response larger than {MAX_RESPONSE_BYTES} bytes", resp.status)
        return body

    async def access_token(self, scopes: tuple[str, ...] = (PNS_SCOPE,), *, refresh: bool = False) -> str:
        """A token for ``scopes``, from the cache unless it is within a minute of expiry."""
        scope = " ".join(sorted(scopes))
        cache_key = (self.token_url, self.client_id, scope)
        cached = self._tokens.get(cache_key)
        if cached is not None and not refresh and time.monotonic() < cached.expires_at:
            return cached.value
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": build_assertion(self._key, self.client_id, self.token_url, kid=self._kid),
            "scope": scope,
        }
        self.token_requests += 1
        try:
            async with self._http().post(self.token_url, data=form, allow_redirects=False,
                                         headers={"Accept": "application/json"}) as resp:
                body = await self._read(resp)
                if resp.status != 200:
                    raise PlatformError("token request refused: " + platform_message(resp.status, body), resp.status)
        except aiohttp.ClientError as exc:
            raise PlatformError(f"token endpoint unreachable: {exc.__class__.__name__}") from None
        except TimeoutError:
            raise PlatformError("token endpoint timed out") from None
        try:
            doc = json.loads(body)
            value = doc["access_token"]
            expires_in = float(doc.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise PlatformError("token endpoint answered without an access_token") from None
        if not isinstance(value, str) or not value:
            raise PlatformError("token endpoint answered without an access_token")
        self._tokens[cache_key] = _Token(value, time.monotonic() + max(0.0, expires_in - TOKEN_MARGIN))
        return value

    async def call(self, method: str, url: str, payload: dict[str, Any] | None = None,
                   scopes: tuple[str, ...] = (PNS_SCOPE,)) -> Any:
        """One JSON service call; on 401 the token is refreshed once and the call repeated."""
        for attempt in (0, 1):
            token = await self.access_token(scopes, refresh=attempt == 1)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            try:
                async with self._http().request(method, url, json=payload, headers=headers,
                                                allow_redirects=False) as resp:
                    body = await self._read(resp)
                    status = resp.status
            except aiohttp.ClientError as exc:
                raise PlatformError(f"{url} unreachable: {exc.__class__.__name__}") from None
            except TimeoutError:
                raise PlatformError(f"{url} timed out") from None
            if status == 401 and attempt == 0:
                continue
            if not 200 <= status < 300:
                raise PlatformError(platform_message(status, body), status)
            try:
                return json.loads(body) if body.strip() else {}
            except ValueError:
                raise PlatformError(f"HTTP {status}: the platform answered with something that is not JSON") from None
        raise AssertionError("unreachable")

    async def list_notice_handlers(self, pns_url: str) -> dict[str, Any]:
        """GET the catalogue: ``{client_id, deployment_id, notice_handlers: [{notice_type, handler}]}``."""
        doc = await self.call("GET", pns_url)
        if not isinstance(doc, dict):
            raise PlatformError("the notice-handlers answer is not a JSON object")
        return doc

    async def set_notice_handler(self, pns_url: str, notice_type: str, handler: str,
                                 max_batch_size: int | None = None) -> dict[str, Any]:
        """PUT one handler (``handler=""`` unsubscribes); returns the platform's answer."""
        payload: dict[str, Any] = {"notice_type": notice_type, "handler": handler}
        if max_batch_size is not None:
            payload["max_batch_size"] = max_batch_size
        doc = await self.call("PUT", pns_url, payload)
        if not isinstance(doc, dict):
            raise PlatformError("the notice-handlers answer is not a JSON object")
        return doc
