"""A fixed key set with the key-source interface of :class:`ingest.jwks.JwksCache` (no HTTP)."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ingest.verify import UnknownKid

__all__ = ["StaticKeySet"]


class StaticKeySet:
    """Keys by kid, known up front: ``get_key`` of a missing kid fails at once, like a loaded cache."""

    def __init__(self, keys: Mapping[str, RSAPublicKey]) -> None:
        self._keys = dict(keys)

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    def lookup(self, kid: str) -> RSAPublicKey | None:
        return self._keys.get(kid)

    async def get_key(self, kid: str) -> RSAPublicKey:
        key = self._keys.get(kid)
        if key is None:
            raise UnknownKid(kid)
        return key
