"""CPU per event of the personal-data steps the worker's sink adds (docs/privacy.md, "What it costs").

    .venv/bin/python -m benchmarks.privacy

No servers: the documentation corpus's events as Kafka records, prepared once, then timed through
``ErasureGuard.screen_batch`` with nobody, 1, 10, 30, 100 and 1,000 people erased (none of them
named by the messages: the common case) and through ``Pseudonymizer.batch``. Best of five passes,
so that the shared machine's bursts count less. Not a test: it prints.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.privacy.guard import ErasureGuard
from processors.privacy.match import Person
from processors.privacy.pseudonymize import Pseudonymizer
from tests.support.corpus import load_examples

MESSAGES = 2000
SHARD = 2107


def _per_event(run: Callable[[], float | None], passes: int, n: int) -> float:
    """Best of ``passes``: ``run`` returns its own seconds, or None to be timed whole."""
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        own = run()
        times.append(own if own is not None else time.perf_counter() - started)
    return min(times) / n * 1e6


def main() -> None:
    raws = [e.record().to_bytes() for e in load_examples() if e.kind == "event"]
    raws = (raws * (MESSAGES // len(raws) + 1))[:MESSAGES]
    ids = IdPolicy()
    print(f"{len(raws)} messages, median {statistics.median(map(len, raws)):.0f} bytes")
    print(f"decode + normalize           {_per_event(lambda: prepare(raws, ids) and None, 3, len(raws)):7.1f} us/event")
    batch = prepare(raws, ids)
    guard = ErasureGuard()
    print(f"screening, nobody erased     {_per_event(lambda: guard.screen_batch(batch), 5, len(raws)):7.2f} us/event")
    for k in (1, 10, 30, 100, 1000):
        people = [Person(9_000_000 + i, SHARD * 10**13 + 9_000_000 + i,
                         frozenset({f"{i:08x}-aaaa-bbbb-cccc-dddddddddddd"})) for i in range(k)]
        guard.use(people, k)
        cost = _per_event(lambda: guard.screen_batch(batch), 5, len(raws))
        print(f"screening, {k:5d} erased       {cost:7.2f} us/event")
    pseudonymizer = Pseudonymizer(b"benchmark-key-" * 3)

    def pseudonymize() -> float:
        fresh = prepare(raws, ids)
        started = time.perf_counter()
        pseudonymizer.batch(fresh)
        return time.perf_counter() - started

    print(f"pseudonymization             {_per_event(pseudonymize, 3, len(raws)):7.1f} us/event")


if __name__ == "__main__":
    main()
