"""ingest.lti_routes.StoredNotices: the warehouse lookup of notice ids is best effort and bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ingest.lti_routes import StoredNotices


class Ledger:
    """A NoticeLedger over a set, which can be made to fail or hang, counting its calls."""

    def __init__(self, stored: set[str], *, fail: bool = False, hang: bool = False) -> None:
        self.stored, self.fail, self.hang = stored, fail, hang
        self.calls: list[list[str]] = []
        self.closed = False

    async def known(self, ids: Sequence[str]) -> set[str]:
        self.calls.append(list(ids))
        if self.fail:
            raise ConnectionRefusedError("database down")
        if self.hang:
            await asyncio.sleep(60)
        return self.stored & set(ids)

    async def close(self) -> None:
        self.closed = True


async def test_asks_once_per_batch_with_distinct_sorted_ids() -> None:
    ledger = Ledger({"a", "c"})
    stored = StoredNotices(ledger)
    assert await stored.known(iter(["c", "b", "a", "c"])) == {"a", "c"}
    assert ledger.calls == [["a", "b", "c"]]
    assert await stored.known([]) == set() and len(ledger.calls) == 1  # nothing to ask
    await stored.close()
    assert ledger.closed


async def test_a_failure_disables_the_lookup_for_the_backoff() -> None:
    ledger = Ledger({"a"}, fail=True)
    stored = StoredNotices(ledger, backoff=0.2)
    assert await stored.known(["a"]) == set()
    assert await stored.known(["a"]) == set() and len(ledger.calls) == 1  # backing off
    await asyncio.sleep(0.25)
    ledger.fail = False
    assert await stored.known(["a"]) == {"a"} and len(ledger.calls) == 2


async def test_a_slow_ledger_costs_at_most_the_timeout() -> None:
    stored = StoredNotices(Ledger({"a"}, hang=True), timeout=0.05)
    started = asyncio.get_running_loop().time()
    assert await stored.known(["a"]) == set()
    assert asyncio.get_running_loop().time() - started < 5


async def test_without_a_ledger_nothing_is_stored() -> None:
    stored = StoredNotices(None)
    assert await stored.known(["a"]) == set()
    await stored.close()
