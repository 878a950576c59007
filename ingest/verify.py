"""Strict, fast RS256 JWS/JWT verification built directly on ``cryptography``.

Why not ``jwt.decode``: PyJWT >= 2.14 rejects non-canonical base64url (GHSA-hxm8-2xgr-2p9m) with a
per-character Python generator, which caps decode at ~5k tokens/s on our 3 KB live events. This module
keeps the same strictness (and is stricter in places: no ``=`` padding, no duplicate header keys,
no NaN/Infinity, bounded JSON nesting) but does the checks with C-level searches and codecs.

One composition for every route: :func:`verify_token` (token + key lookup + :class:`TokenPolicy` ->
claims) and :func:`verify_with`, the same for a key source that may have to fetch a key first.
Everything here is pure: no I/O of its own. Key retrieval lives in :mod:`ingest.jwks`.
"""

from __future__ import annotations

import binascii
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import pybase64
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from canvas_stream.errors import Refused
from ingest.json_guard import MAX_JSON_DEPTH, nested_deeper_than

__all__ = [
    "DEFAULT_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "ClaimsRejected",
    "KeySource",
    "TokenPolicy",
    "TokenRejected",
    "UnknownKid",
    "VerifiedToken",
    "check_claims",
    "verify_token",
    "verify_with",
]

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256",)
#: The only algorithms this verifier can ever accept, whatever the caller's allowlist says.
SUPPORTED_ALGORITHMS: dict[str, hashes.HashAlgorithm] = {
    "RS256": hashes.SHA256(),
    "RS384": hashes.SHA384(),
    "RS512": hashes.SHA512(),
}
MAX_KID_LEN = 256
MAX_HEADER_LEN = 8 * 1024  # encoded; real JOSE headers are < 200 bytes
MAX_TOKEN_BYTES = 256 * 1024

# Issuers reuse a handful of headers ({"alg","kid","typ"}), so cache the decoded JSON per encoded
# header segment. Only well-formed JSON objects are cached; alg/kid checks run on every call.
# Bounded (cleared when full) so attacker-chosen headers cannot grow memory.
_HEADER_CACHE: dict[bytes, dict[str, Any]] = {}
_HEADER_CACHE_MAX = 256

_PKCS1V15 = padding.PKCS1v15()
# Concrete key classes already seen to be RSAPublicKey: ``isinstance`` on the ABC is a Python-level
# ``__instancecheck__`` call per token; a type is checked once (a handful of classes at most).
_RSA_KEY_TYPES: set[type] = set()
# Canonical trailing bits: for len % 4 == 2 the last char carries 4 unused bits, for == 3 two bits;
# those bits must be zero, otherwise two different strings decode to the same bytes.
_LAST_CHAR_OK_REM2 = frozenset(b"AQgw")
_LAST_CHAR_OK_REM3 = frozenset(b"AEIMQUYcgkosw048")
_PAD = (b"", b"", b"==", b"=")
_SAFE_ALG_RE = re.compile(r"[A-Za-z0-9+_-]{1,16}")


class TokenRejected(Refused):
    """The token is not acceptable. ``reason`` is short and safe to log or return to a client."""


class UnknownKid(TokenRejected):
    """The key lookup has no key for ``kid``; a key source that can fetch keys may try again."""

    def __init__(self, kid: str) -> None:
        super().__init__("unknown kid")
        self.kid = kid


class ClaimsRejected(TokenRejected):
    """The signature verified but the claims broke the policy; ``claims`` are authentic, so a
    caller may quote an id from them when it reports the rejection."""

    def __init__(self, reason: str, claims: dict[str, Any]) -> None:
        super().__init__(reason)
        self.claims = claims


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What a token must satisfy besides a good signature: one per route, built from settings.

    ``issuer``/``audience`` None: not checked (Canvas live events carry no documented aud).
    ``require``: claim names that must be present and not null.
    """

    issuer: str | None
    leeway: float
    audience: str | None = None
    require: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    max_len: int = MAX_TOKEN_BYTES


class KeySource(Protocol):
    """Keys by kid: a synchronous cache-only lookup, and an awaitable get that may fetch."""

    @property
    def ready(self) -> bool: ...

    def lookup(self, kid: str) -> RSAPublicKey | None: ...

    async def get_key(self, kid: str) -> RSAPublicKey: ...


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature and claims passed every check."""

    header: dict[str, Any]
    claims: dict[str, Any]
    kid: str
    alg: str
    # The claims' JSON text, as signed: a record carries it instead of encoding ``claims`` again.
    claims_json: bytes = field(default=b"", repr=False, compare=False)


def _b64url_decode(segment: bytes, what: str) -> bytes:
    """Decode canonical unpadded base64url, or reject (same rule as PyJWT >= 2.14, minus padding).

    ``pybase64`` (SIMD) with ``validate=True`` rejects anything outside the alphabet once ``-_`` stand
    for ``+/``; ``+``, ``/`` and ``=`` in the input are refused first, and the last character must
    leave the unused trailing bits zero. As strict as a full-alphabet regex; on a live event's
    ~2.5k-character payload segment the stdlib's strict ``a2b_base64`` took ~5.4 us, this ~0.7 us.
    """
    rem = len(segment) & 3
    if (  # find, not ``in``: ``bytes in bytes`` first tries the needle as an int and formats a TypeError
        rem == 1
        or segment.find(b"+") >= 0
        or segment.find(b"/") >= 0
        or segment.find(b"=") >= 0
        or (rem == 2 and segment[-1] not in _LAST_CHAR_OK_REM2)
        or (rem == 3 and segment[-1] not in _LAST_CHAR_OK_REM3)
    ):
        raise TokenRejected(f"malformed token ({what} encoding)")
    try:
        # altchars b"-_", validate: positionally, as keywords would cost a dict per call
        return pybase64.b64decode(segment + _PAD[rem] if rem else segment, b"-_", True)
    except (binascii.Error, ValueError):
        raise TokenRejected(f"malformed token ({what} encoding)") from None


def _reject_constant(name: str) -> Any:
    """json hook: NaN/Infinity are not JSON (RFC 8259) and would defeat numeric claim checks."""
    raise ValueError("non-finite number")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json hook: a header with two ``alg`` values is ambiguous, so refuse it (RFC 7515 s4)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


# Built once: json.loads(..., parse_constant=...) would construct a new decoder on every call.
_HEADER_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
_PAYLOAD_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# Claims are decoded by msgspec first (about a third of the stdlib's time; the same values for every
# text it accepts: the last of duplicate keys wins, integers of any size are exact); what it refuses
# (NaN/Infinity, lone surrogate escapes, numbers out of float range) goes to the stdlib decoder above,
# which decides exactly as before.
_FAST_PAYLOAD_DECODER = msgspec.json.Decoder()


def _load_json_object(raw: bytes, what: str, *, strict_keys: bool) -> dict[str, Any]:
    """UTF-8 JSON object or TokenRejected; never RecursionError/UnicodeError/ValueError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenRejected(f"malformed token ({what} is not UTF-8)") from None
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise TokenRejected(f"malformed token (JSON nested deeper than {MAX_JSON_DEPTH})")
    if not strict_keys:
        try:
            obj = _FAST_PAYLOAD_DECODER.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            pass
        else:
            if type(obj) is not dict:
                raise TokenRejected(f"malformed token ({what} is not a JSON object)")
            return obj
    try:
        obj = (_HEADER_DECODER if strict_keys else _PAYLOAD_DECODER).decode(text)
    except (ValueError, RecursionError):
        raise TokenRejected(f"malformed token ({what} is not valid JSON)") from None
    if type(obj) is not dict:
        raise TokenRejected(f"malformed token ({what} is not a JSON object)")
    return obj


def _checked_segments(
    token: str | bytes, max_len: int, algorithms: Iterable[str]
) -> tuple[dict[str, Any], bytes, bytes, bytes, str, str]:
    """Split and validate a compact JWS: structure, encoding, header, alg allowlist and kid; its parts
    as a tuple (header, payload, signing input, signature, alg, kid), the signature NOT checked yet.

    The payload is only checked for canonical encoding here; its JSON is decoded after the signature
    verifies (:func:`verify_token`) so that forged tokens cost as little as possible.
    """
    if isinstance(token, str):
        try:
            token = token.encode("ascii")
        except UnicodeEncodeError:
            raise TokenRejected("malformed token (non-ASCII)") from None
    elif not isinstance(token, (bytes, bytearray, memoryview)):
        raise TokenRejected("malformed token (not a string)")
    else:
        token = bytes(token)
    if len(token) > max_len:
        raise TokenRejected("token too large")
    # Three segments, found with memchr (``split`` walks the ~3.4k characters one by one).
    h_end = token.find(b".")
    p_end = token.find(b".", h_end + 1) if h_end >= 0 else -1
    if p_end < 0 or token.find(b".", p_end + 1) >= 0:
        raise TokenRejected("malformed token (expected 3 segments)")
    h_seg, p_seg, s_seg = token[:h_end], token[h_end + 1:p_end], token[p_end + 1:]
    if len(h_seg) > MAX_HEADER_LEN:
        raise TokenRejected("malformed token (header too large)")

    cached = _HEADER_CACHE.get(h_seg)
    if cached is None:
        cached = _load_json_object(_b64url_decode(h_seg, "header"), "header", strict_keys=True)
        if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[h_seg] = cached
    header = dict(cached)  # callers may mutate their copy; the cached one stays pristine

    alg = header.get("alg")
    allowed = algorithms if isinstance(algorithms, (tuple, frozenset, set)) else tuple(algorithms)
    if type(alg) is not str or alg not in allowed or alg not in SUPPORTED_ALGORITHMS:
        if type(alg) is str and _SAFE_ALG_RE.fullmatch(alg):
            raise TokenRejected(f"unsupported alg {alg!r}")
        raise TokenRejected("unsupported alg")
    if "crit" in header:
        raise TokenRejected("unsupported header 'crit'")
    if "b64" in header and header["b64"] is not True:
        raise TokenRejected("unsupported header 'b64'")
    kid = header.get("kid")
    if type(kid) is not str or not kid:
        raise TokenRejected("missing or invalid kid")
    if len(kid) > MAX_KID_LEN:
        raise TokenRejected("kid too long")

    # Decode the payload now so a token is either fully canonical or rejected; JSON parsing of it
    # waits until the signature verifies.
    payload = _b64url_decode(p_seg, "payload")
    signature = _b64url_decode(s_seg, "signature")
    return header, payload, token[:p_end], signature, alg, kid


def _check_signature(alg: str, signature: bytes, signing_input: bytes, key: RSAPublicKey) -> None:
    """RSASSA-PKCS1-v1_5 verify of the signing input; raises TokenRejected("bad signature")."""
    hash_alg = SUPPORTED_ALGORITHMS.get(alg)
    if hash_alg is None:  # _checked_segments lets no other alg through; refused here all the same
        raise TokenRejected("unsupported alg")
    if type(key) not in _RSA_KEY_TYPES:
        if not isinstance(key, RSAPublicKey):
            raise TokenRejected("unsupported key type")
        _RSA_KEY_TYPES.add(type(key))
    try:
        key.verify(signature, signing_input, _PKCS1V15, hash_alg)
    except InvalidSignature:
        raise TokenRejected("bad signature") from None
    except ValueError:  # e.g. signature length does not match the modulus
        raise TokenRejected("bad signature") from None


def _numeric(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim as a number, None when absent; bools and strings are rejected."""
    if name not in claims:
        return None
    v = claims[name]
    t = type(v)
    if t is not int and t is not float:
        raise TokenRejected(f"claim '{name}' must be a number")
    return v


def check_claims(claims: dict[str, Any], policy: TokenPolicy, *, now: float | None = None) -> None:
    """Registered-claim checks: iss, exp/nbf/iat with leeway, aud (+ LTI azp rule), required names.

    ``aud`` is only checked when the policy names an audience. A required claim whose value is
    ``null`` counts as missing (as in PyJWT).
    """
    issuer, audience, leeway = policy.issuer, policy.audience, policy.leeway
    for name in policy.require:
        if claims.get(name) is None:
            raise TokenRejected(f"missing claim '{name}'")
    if now is None:
        now = time.time()

    if issuer is not None:
        iss = claims.get("iss")
        if iss is None:
            raise TokenRejected("missing claim 'iss'")
        if type(iss) is not str or iss != issuer:
            raise TokenRejected("issuer mismatch")

    exp = _numeric(claims, "exp")
    if exp is not None and now > exp + leeway:
        raise TokenRejected("token expired")
    nbf = _numeric(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenRejected("token not yet valid (nbf)")
    iat = _numeric(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenRejected("token issued in the future (iat)")

    if audience is not None:
        aud = claims.get("aud")
        if aud is None:
            raise TokenRejected("missing claim 'aud'")
        if type(aud) is str:
            if aud != audience:
                raise TokenRejected("audience mismatch")
        elif type(aud) is list and aud and all(type(a) is str for a in aud):
            if audience not in aud:
                raise TokenRejected("audience mismatch")
            # LTI 1.3 core s5.1.2: with several audiences, azp must name the intended one.
            if len(aud) > 1 and claims.get("azp") != audience:
                raise TokenRejected("azp mismatch")
        else:
            raise TokenRejected("invalid claim 'aud'")


def verify_token(
    token: str | bytes,
    key_lookup: Callable[[str], RSAPublicKey | None],
    policy: TokenPolicy,
    *,
    now: float | None = None,
) -> VerifiedToken:
    """Parse, look up the key by kid, verify the signature, then decode the claims and apply the policy.

    Raises UnknownKid when the lookup has no key, ClaimsRejected when only the claims are wrong,
    TokenRejected for everything else.
    """
    header, payload, signing_input, signature, alg, kid = _checked_segments(token, policy.max_len, policy.algorithms)
    key = key_lookup(kid)
    if key is None:
        raise UnknownKid(kid)
    _check_signature(alg, signature, signing_input, key)
    claims = _load_json_object(payload, "payload", strict_keys=False)
    try:
        check_claims(claims, policy, now=now)
    except TokenRejected as exc:
        raise ClaimsRejected(exc.reason, claims) from None
    return VerifiedToken(header=header, claims=claims, kid=kid, alg=alg, claims_json=payload)


async def verify_with(
    token: str | bytes, keys: KeySource, policy: TokenPolicy, *, now: float | None = None
) -> VerifiedToken:
    """:func:`verify_token` against a key source: the cached key when there is one, else the key
    source's (cooldown-limited) fetch, then the same checks again with the fetched key.

    Raises TokenRejected (answer 401), or whatever ``keys.get_key`` raises when no key set can be
    had at all (``KeyUnavailable``: answer 503).
    """
    try:
        return verify_token(token, keys.lookup, policy, now=now)
    except UnknownKid as missing:
        kid = missing.kid
    key = await keys.get_key(kid)
    return verify_token(token, {kid: key}.get, policy, now=now)
