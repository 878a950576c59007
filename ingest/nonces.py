"""LTI notice replay protection: a nonce already seen under another notice id is a replay.

Every notice JWT carries a ``nonce`` (Canvas: a random UUID per JWT). A notice is rejected when its
nonce was seen, within its token's lifetime, under another ``notice.id``; the same notice id sent
again with the same nonce is not a replay but a duplicate (answered as before).

Where the nonces live: ``canvas_stream.lti_nonces`` in PostgreSQL, so every ingress replica sees every
other's (the table is declared in ``processors/warehouse/schema.py``; the ingress writes it with
plain SQL and imports no table definition, like :mod:`ingest.answers`). A row lives until its
token's ``exp`` plus ``LTI_LEEWAY_SECONDS``: after that the token itself is refused, so the nonce
no longer needs remembering, and a bounded ``DELETE`` purges it. The claim is atomic across
replicas: ``INSERT ... ON CONFLICT DO NOTHING``-style, then the stored notice id is compared.

When PostgreSQL is unreachable the check **fails open**: it uses this replica's memory of recent
nonces, counts every notice so checked (``canvas_stream_lti_nonce_store_unavailable_total``) and
logs a warning once per outage. Why: Canvas never resends a notice, so refusing during an outage
would lose every notice for good, while accepting risks only the replay, on another replica, of a
token the platform itself signed and that has not expired, and a replayed notice id is still caught
as a duplicate by the worker's primary key. Nonces accepted meanwhile are written to PostgreSQL
once it answers again, so the window closes with the outage. docs/lti.md argues it further.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from sqlalchemy import text

from canvas_stream.lazy_engine import LazyEngine
from canvas_stream.loop import cancel_and_wait
from canvas_stream.metrics import LTI_NONCE_STORE_UNAVAILABLE
from canvas_stream.settings import warehouse_sql

__all__ = [
    "NonceBackend",
    "NonceClaim",
    "PostgresNonces",
    "RecentNonces",
    "ReplayGuard",
    "find_replays",
]

log = structlog.get_logger(__name__)

MEMORY_SIZE = 100_000
MAX_LIFETIME = 366 * 86400.0  # a token valid longer than a year is absurd; its nonce is kept a year
PURGE_BATCH = 1000
PURGE_ROUNDS = 20

# Plain SQL on canvas_stream.lti_nonces (declared in processors/warehouse/schema.py). A nonce whose row
# expired (not purged yet) is taken over: that token is refused by its exp check anyway.
CLAIM_SQL = text(warehouse_sql("""
    INSERT INTO {schema}.lti_nonces AS stored (nonce, notice_id, expires_at)
    SELECT n, i, e FROM unnest(CAST(:nonces AS text[]), CAST(:notice_ids AS text[]),
                               CAST(:expires AS timestamptz[])) AS claimed(n, i, e)
    ON CONFLICT (nonce) DO UPDATE SET notice_id = excluded.notice_id, expires_at = excluded.expires_at,
                                      seen_at = now()
        WHERE stored.expires_at < now()
    RETURNING nonce
"""))
OWNERS_SQL = text(warehouse_sql(
    "SELECT nonce, notice_id FROM {schema}.lti_nonces WHERE nonce = ANY(CAST(:nonces AS text[]))"))
PURGE_SQL = text(warehouse_sql("""
    DELETE FROM {schema}.lti_nonces WHERE nonce IN (
        SELECT nonce FROM {schema}.lti_nonces WHERE expires_at < now() LIMIT :limit FOR UPDATE SKIP LOCKED)
"""))


@dataclass(frozen=True, slots=True)
class NonceClaim:
    """One verified notice's nonce, its notice id, and until when (unix time) it must be remembered."""

    nonce: str
    notice_id: str
    expires_at: float


def claim_for(nonce: str, notice_id: str, exp: float, leeway: float, now: float) -> NonceClaim:
    """The claim of a notice whose token expires at ``exp``: remembered until ``exp + leeway``."""
    return NonceClaim(nonce, notice_id, min(exp + leeway, now + MAX_LIFETIME))


def find_replays(claims: Sequence[NonceClaim], *known: Mapping[str, str]) -> list[bool]:
    """Per claim, whether it is a replay: its nonce is known under another notice id, in any of
    ``known`` (nonce -> notice id) or, for a nonce known nowhere, earlier in ``claims``. Pure."""
    first: dict[str, str] = {}
    out: list[bool] = []
    for claim in claims:
        owners = {m[claim.nonce] for m in known if claim.nonce in m} or {first.setdefault(claim.nonce, claim.notice_id)}
        out.append(owners != {claim.notice_id})
    return out


class RecentNonces:
    """This replica's memory of nonces, until they expire; bounded (oldest evicted first)."""

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def owners(self, nonces: Iterable[str], now: float) -> dict[str, str]:
        found: dict[str, str] = {}
        for nonce in nonces:
            entry = self._entries.get(nonce)
            if entry is not None and entry[1] >= now:
                found[nonce] = entry[0]
        return found

    def add(self, claim: NonceClaim) -> None:
        if claim.nonce not in self._entries:
            self._entries[claim.nonce] = (claim.notice_id, claim.expires_at)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget_expired(self, now: float) -> None:
        for nonce in [n for n, (_, expires) in self._entries.items() if expires < now]:
            del self._entries[nonce]


class NonceBackend(Protocol):
    """The shared store of nonces (every replica's)."""

    async def claim(self, claims: Sequence[NonceClaim]) -> dict[str, str]:
        """Record the nonces not stored yet (atomically); return nonce -> notice id of every claimed
        nonce, as stored (its first notice) or as recorded now."""
        ...

    async def purge(self) -> int: ...

    async def close(self) -> None: ...


class PostgresNonces:
    """``canvas_stream.lti_nonces`` over a small pool (created on first use: a bad URL never stops the ingress)."""

    def __init__(self, database_url: str, *, purge_batch: int = PURGE_BATCH, purge_rounds: int = PURGE_ROUNDS) -> None:
        self._db = LazyEngine(database_url, pool_size=2, max_overflow=2)
        self.purge_batch = purge_batch
        self.purge_rounds = purge_rounds

    async def claim(self, claims: Sequence[NonceClaim]) -> dict[str, str]:
        unique: dict[str, NonceClaim] = {}
        for c in claims:
            unique.setdefault(c.nonce, c)  # one row per nonce per statement (ON CONFLICT's rule)
        if not unique:
            return {}
        params = {"nonces": list(unique), "notice_ids": [c.notice_id for c in unique.values()],
                  "expires": [datetime.fromtimestamp(c.expires_at, UTC) for c in unique.values()]}
        async with self._db.engine.begin() as conn:
            inserted = set((await conn.execute(CLAIM_SQL, params)).scalars())
            owners = {n: unique[n].notice_id for n in inserted}
            rest = [n for n in unique if n not in inserted]
            if rest:
                owners.update({r.nonce: r.notice_id for r in await conn.execute(OWNERS_SQL, {"nonces": rest})})
        return owners

    async def purge(self) -> int:
        """Delete expired nonces in bounded batches (short transactions, no long lock); how many."""
        deleted = 0
        for _ in range(self.purge_rounds):
            async with self._db.engine.begin() as conn:
                n = (await conn.execute(PURGE_SQL, {"limit": self.purge_batch})).rowcount or 0
            deleted += n
            if n < self.purge_batch:
                break
        return deleted

    async def close(self) -> None:
        await self._db.dispose()


class ReplayGuard:
    """Decides replays from this replica's memory and the shared store; fails open (see module doc)."""

    def __init__(self, store: NonceBackend | None, *, timeout: float = 2.0, backoff: float = 30.0,
                 purge_every: float = 60.0, memory: RecentNonces | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.timeout = timeout
        self.backoff = backoff
        self.purge_every = purge_every
        self.memory = memory or RecentNonces()
        self._clock = clock
        self._skip_until = 0.0
        self._unsynced: list[NonceClaim] = []  # accepted while the store was unreachable
        self.store_error: str | None = None  # set while the store is failing
        self._purger: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        """For /readyz: where nonces are checked now."""
        if self.store is None:
            return "memory only (DATABASE_URL not set)"
        if self.store_error is not None:
            return f"memory only (PostgreSQL unreachable: {self.store_error})"
        return "ok"

    async def replays(self, claims: Sequence[NonceClaim]) -> list[bool]:
        """Per claim, True when it replays a nonce seen under another notice id. Never raises."""
        if not claims:
            return []
        now = self._clock()
        remembered = self.memory.owners((c.nonce for c in claims), now)
        stored = await self._claim(claims)
        verdicts = find_replays(claims, remembered, stored or {})
        for claim, replay in zip(claims, verdicts, strict=True):
            if not replay:
                self.memory.add(claim)
                if stored is None and self.store is not None:
                    self._remember_unsynced(claim)
        return verdicts

    def _remember_unsynced(self, claim: NonceClaim) -> None:
        self._unsynced.append(claim)
        if len(self._unsynced) > MEMORY_SIZE:
            del self._unsynced[: len(self._unsynced) - MEMORY_SIZE]

    async def _claim(self, claims: Sequence[NonceClaim]) -> dict[str, str] | None:
        """The store's owners of these nonces; None when it cannot answer (counted, logged)."""
        if self.store is None:
            return None
        if time.monotonic() < self._skip_until:
            LTI_NONCE_STORE_UNAVAILABLE.inc(len(claims))
            return None
        try:
            async with asyncio.timeout(self.timeout):
                if self._unsynced:
                    await self.store.claim(self._unsynced)
                    self._unsynced.clear()
                owners = await self.store.claim(claims)
        except Exception as exc:
            self._skip_until = time.monotonic() + self.backoff
            LTI_NONCE_STORE_UNAVAILABLE.inc(len(claims))
            if self.store_error is None:  # once per outage, not per notice
                log.warning("LTI nonce store (canvas_stream.lti_nonces) unreachable; checking nonces against this "
                            "replica's memory only", error=f"{exc.__class__.__name__}: {str(exc)[:200]}",
                            retry_in=self.backoff)
            self.store_error = exc.__class__.__name__
            return None
        if self.store_error is not None:
            log.info("LTI nonce store reachable again")
            self.store_error = None
        return owners

    async def purge(self) -> int:
        """Forget expired nonces here and in the store; how many rows the store deleted."""
        self.memory.forget_expired(self._clock())
        if self.store is None:
            return 0
        return await self.store.purge()

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.purge_every)
            try:
                async with asyncio.timeout(max(self.timeout, 30.0)):
                    deleted = await self.purge()
                if deleted:
                    log.info("purged expired LTI nonces", deleted=deleted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again; claims take over expired rows meanwhile
                log.info("LTI nonce purge failed", error=exc.__class__.__name__)

    async def start(self) -> None:
        if self.store is None:
            log.warning("LTI nonce replay check uses this replica's memory only (DATABASE_URL not set): "
                        "replicas do not share it and a restart forgets it")
        self._purger = asyncio.create_task(self._purge_forever(), name="lti-nonce-purge")

    async def stop(self) -> None:
        await cancel_and_wait(self._purger)
        self._purger = None
        if self.store is not None:
            await self.store.close()
