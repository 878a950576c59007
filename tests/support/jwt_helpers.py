"""Reusable JWT/JWKS test toolkit: RSA keys, JWKs, signed tokens, and a real local JWKS server.

Import from other tests: ``from tests.jwt_helpers import make_rsa_key, sign, JwksServer`` (or
``from jwt_helpers import ...`` when tests/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

__all__ = [
    "JwksServer",
    "b64url",
    "compact",
    "jwk_for",
    "make_rsa_key",
    "rsa_key",
    "sign",
    "sign_rs",
]


def make_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A fresh RSA private key (~50-200 ms; prefer :func:`rsa_key` for reusable named keys)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A named key, generated once per test session (key generation is the slow part of tests)."""
    return make_rsa_key(bits)


def jwk_for(key: rsa.RSAPrivateKey | rsa.RSAPublicKey, kid: str, **extra: Any) -> dict[str, Any]:
    """Public RSA JWK with ``kid``, ``use: sig`` and ``alg: RS256`` (override via ``extra``)."""
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(pub, as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    jwk.update(extra)
    return jwk


def sign(
    claims: dict[str, Any],
    key: rsa.RSAPrivateKey,
    kid: str | None,
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
) -> str:
    """A compact JWS made by PyJWT (the reference implementation)."""
    hdr: dict[str, Any] = {} if kid is None else {"kid": kid}
    hdr.update(headers or {})
    return jwt.encode(claims, key, algorithm=alg, headers=hdr)


def b64url(data: bytes | str | dict[str, Any]) -> str:
    """Unpadded base64url of bytes, text, or a dict serialised as compact JSON."""
    if isinstance(data, dict):
        data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any] | bytes | str, payload: dict[str, Any] | bytes | str, signature: bytes) -> str:
    """Assemble a compact JWS from raw parts (for hand-made hostile tokens)."""
    return f"{b64url(header)}.{b64url(payload)}.{b64url(signature)}"


def sign_rs(header: dict[str, Any], payload: dict[str, Any] | bytes, key: rsa.RSAPrivateKey) -> str:
    """RS256-sign arbitrary header/payload bytes without PyJWT's header normalisation."""
    signing_input = f"{b64url(header)}.{b64url(payload)}".encode()
    sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64url(sig)}"


class JwksServer:
    """A real aiohttp server on 127.0.0.1 serving ``{"keys": self.keys}`` at ``/jwks``.

    Mutable knobs: ``keys`` (list of JWK dicts), ``fail`` (None, an HTTP status int, or "hang"),
    ``delay`` (seconds before answering), ``cache_control`` (header value or None), ``body``
    (raw bytes overriding the JSON). ``requests`` counts hits on /jwks.
    """

    def __init__(self, keys: list[dict[str, Any]] | None = None, *, cache_control: str | None = None) -> None:
        self.keys: list[dict[str, Any]] = list(keys or [])
        self.fail: int | str | None = None
        self.delay: float = 0.0
        self.cache_control = cache_control
        self.body: bytes | None = None
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail == "hang":
            await self._release.wait()
            raise web.HTTPServiceUnavailable()
        if isinstance(self.fail, int):
            return web.Response(status=self.fail, text="failure on demand")
        headers = {"Content-Type": "application/json"}
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
        return web.Response(body=body, headers=headers)

    async def __aenter__(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/jwks", self._handle)
        app.router.add_get("/redirect", lambda r: web.HTTPFound("/jwks"))  # type: ignore[arg-type,return-value]
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        self.url = f"{self.base_url}/jwks"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
