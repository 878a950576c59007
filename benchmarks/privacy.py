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


def measure(messages: int = MESSAGES, erased: tuple[int, ...] = (1, 10, 30, 100, 1000)) -> dict[str, float]:
    """CPU microseconds per event: decoding and normalizing (for scale), erasure screening with nobody
    and with each of ``erased`` people on the list, pseudonymization. Also used by benchmarks/history.py."""
    raws = [e.record().to_bytes() for e in load_examples() if e.kind == "event"]
    raws = (raws * (messages // len(raws) + 1))[:messages]
    ids = IdPolicy()
    out = {"messages": len(raws), "median_message_bytes": statistics.median(map(len, raws)),
           "prepare_us": _per_event(lambda: prepare(raws, ids) and None, 3, len(raws))}
    batch = prepare(raws, ids)
    guard = ErasureGuard()
    out["screen_nobody_erased_us"] = _per_event(lambda: guard.screen_batch(batch), 5, len(raws))
    for k in erased:
        people = [Person(9_000_000 + i, SHARD * 10**13 + 9_000_000 + i,
                         frozenset({f"{i:08x}-aaaa-bbbb-cccc-dddddddddddd"})) for i in range(k)]
        guard.use(people, k)
        out[f"screen_{k}_erased_us"] = _per_event(lambda: guard.screen_batch(batch), 5, len(raws))
    pseudonymizer = Pseudonymizer(b"benchmark-key-" * 3)

    def pseudonymize() -> float:
        fresh = prepare(raws, ids)
        started = time.perf_counter()
        pseudonymizer.batch(fresh)
        return time.perf_counter() - started

    out["pseudonymize_us"] = _per_event(pseudonymize, 3, len(raws))
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    found = measure()
    print(f"{found['messages']} messages, median {found['median_message_bytes']:.0f} bytes")
    print(f"decode + normalize           {found['prepare_us']:7.1f} us/event")
    print(f"screening, nobody erased     {found['screen_nobody_erased_us']:7.2f} us/event")
    for key, value in found.items():
        if key.startswith("screen_") and key != "screen_nobody_erased_us":
            print(f"screening, {int(key.split('_')[1]):5d} erased       {value:7.2f} us/event")
    print(f"pseudonymization             {found['pseudonymize_us']:7.1f} us/event")


if __name__ == "__main__":
    main()
