"""The tool's RSA key pair: generate it, load it, publish its public half as a JWK.

Why: the platform (Canvas) verifies our client-credentials assertions with the public JWK pasted
into (or fetched for) the developer key, and it requires ``alg`` and ``use`` on that JWK. The
``kid`` defaults to the RFC 7638 thumbprint so the same key always has the same id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from canvas_stream.errors import CanvasStreamError

KEY_BITS = 2048


class KeyFileError(CanvasStreamError):
    """The key file is missing, unreadable, not an RSA private key, or would be overwritten."""


def _b64url_uint(value: int) -> str:
    data = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key."""
    numbers = public_key.public_numbers()
    canonical = json.dumps(
        {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode("ascii")


def public_jwk(key: rsa.RSAPrivateKey | rsa.RSAPublicKey, kid: str | None = None) -> dict[str, Any]:
    """The public JWK with ``kid`` (given, else the thumbprint), ``alg: RS256`` and ``use: sig``."""
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    numbers = pub.public_numbers()
    return {
        "kty": "RSA",
        "kid": kid or thumbprint(pub),
        "alg": "RS256",
        "use": "sig",
        "e": _b64url_uint(numbers.e),
        "n": _b64url_uint(numbers.n),
    }


def generate_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Create an RSA 2048 key and write it as PKCS#8 PEM with 0600 permissions; never overwrite."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: refuse to replace a key the platform may already trust; 0600 from the start.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def load_private_key(path: str | Path) -> rsa.RSAPrivateKey:
    """Read an unencrypted RSA private key PEM; the error never includes the file's content."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc.__class__.__name__}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path} is not an RSA private key")
    if key.key_size < KEY_BITS:
        raise KeyFileError(f"{path} holds an RSA key smaller than {KEY_BITS} bits")
    return key
