"""ingest.nonces: which notices replay a nonce, and how the guard behaves when its store fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from ingest.nonces import MAX_LIFETIME, NonceClaim, RecentNonces, ReplayGuard, claim_for, find_replays

T = 1_000_000.0  # a fixed "now" (unix time)


def c(nonce: str, notice_id: str, expires_at: float = T + 3600) -> NonceClaim:
    return NonceClaim(nonce, notice_id, expires_at)


@pytest.mark.parametrize(("claims", "known", "expected"), [
    pytest.param([c("n1", "a")], [], [False], id="first-sight"),
    pytest.param([c("n1", "a")], [{"n1": "a"}], [False], id="same-notice-resent-is-not-a-replay"),
    pytest.param([c("n1", "b")], [{"n1": "a"}], [True], id="nonce-under-another-notice"),
    pytest.param([c("n1", "a"), c("n1", "b")], [], [False, True], id="replay-within-one-batch"),
    pytest.param([c("n1", "a"), c("n1", "a")], [], [False, False], id="same-notice-twice-in-a-batch"),
    pytest.param([c("n1", "a")], [{}, {"n1": "b"}], [True], id="known-to-the-store-only"),
    pytest.param([c("n1", "a")], [{"n1": "a"}, {"n1": "b"}], [True], id="memory-and-store-disagree"),
    pytest.param([c("n1", "a"), c("n2", "b")], [{"n2": "x"}], [False, True], id="per-notice"),
])
def test_find_replays(claims, known, expected):
    assert find_replays(claims, *known) == expected


def test_claims_are_kept_for_the_token_lifetime_plus_leeway_at_most_a_year():
    assert claim_for("n", "a", exp=T + 3600, leeway=60, now=T).expires_at == T + 3660
    assert claim_for("n", "a", exp=T + 10 * MAX_LIFETIME, leeway=60, now=T).expires_at == T + MAX_LIFETIME


def test_memory_forgets_expired_nonces_and_stays_bounded():
    memory = RecentNonces(size=3)
    memory.add(c("old", "a", expires_at=T - 1))
    memory.add(c("n1", "b"))
    assert memory.owners(["old", "n1", "unknown"], now=T) == {"n1": "b"}  # an expired one is not a replay
    memory.add(c("n1", "other"))  # the first notice of a nonce stays its owner
    assert memory.owners(["n1"], now=T) == {"n1": "b"}
    for i in range(5):
        memory.add(c(f"x{i}", "z"))
    assert len(memory) == 3 and memory.owners(["n1"], now=T) == {}  # oldest evicted
    memory.forget_expired(now=T + 7200)
    assert len(memory) == 0


class Store:
    """A NonceBackend over a dict, which can be made to fail or hang, counting its calls."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.fail = False
        self.hang = False
        self.calls: list[list[str]] = []
        self.purged = 0
        self.closed = False

    async def claim(self, claims: Sequence[NonceClaim]) -> dict[str, str]:
        self.calls.append([x.nonce for x in claims])
        if self.fail:
            raise ConnectionRefusedError("database down")
        if self.hang:
            await asyncio.sleep(60)
        return {x.nonce: self.rows.setdefault(x.nonce, x.notice_id) for x in claims}

    async def purge(self) -> int:
        self.purged += 1
        return 0

    async def close(self) -> None:
        self.closed = True


def unavailable() -> float:
    return REGISTRY.get_sample_value("canvas_stream_lti_nonce_store_unavailable_total") or 0.0


async def test_the_store_is_shared_between_guards_like_replicas():
    store = Store()
    one, two = ReplayGuard(store, clock=lambda: T), ReplayGuard(store, clock=lambda: T)
    assert await one.replays([c("n1", "a")]) == [False]
    assert await two.replays([c("n1", "b"), c("n1", "a")]) == [True, False]  # the other replica knows
    assert one.state == "ok"


async def test_an_unreachable_store_fails_open_on_memory_counts_and_resyncs(caplog):
    store = Store()
    guard = ReplayGuard(store, backoff=0.2, clock=lambda: T)
    assert await guard.replays([c("n0", "a0")]) == [False]

    store.fail = True
    before = unavailable()
    assert await guard.replays([c("n1", "a"), c("n2", "b")]) == [False, False]  # accepted: fail open
    assert unavailable() == before + 2
    assert guard.state.startswith("memory only (PostgreSQL unreachable")
    assert await guard.replays([c("n1", "x")]) == [True]  # this replica's memory still catches a replay
    assert len(store.calls) == 2  # ... without asking the store again during the backoff
    assert await guard.replays([c("n0", "y")]) == [True]  # remembered from before the outage
    assert unavailable() == before + 4

    await asyncio.sleep(0.25)
    store.fail = False
    assert await guard.replays([c("n3", "c")]) == [False]
    assert guard.state == "ok"
    assert store.rows == {"n0": "a0", "n1": "a", "n2": "b", "n3": "c"}  # accepted meanwhile, now shared
    other = ReplayGuard(store, clock=lambda: T)
    assert await other.replays([c("n2", "evil")]) == [True]


async def test_a_hanging_store_costs_at_most_the_timeout():
    store = Store()
    store.hang = True
    guard = ReplayGuard(store, timeout=0.2, clock=lambda: T)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await guard.replays([c("n1", "a")]) == [False]
    assert loop.time() - started < 1.0
    assert guard.store_error == "TimeoutError"


async def test_without_a_store_memory_only_and_purge_runs():
    guard = ReplayGuard(None, purge_every=0.05, clock=lambda: T)
    assert guard.state == "memory only (DATABASE_URL not set)"
    assert await guard.replays([c("n1", "a")]) == [False]
    assert await guard.replays([c("n1", "b")]) == [True]

    store = Store()
    purging = ReplayGuard(store, purge_every=0.05, clock=lambda: T)
    await purging.start()
    await asyncio.sleep(0.3)
    await purging.stop()
    assert store.purged >= 2 and store.closed
