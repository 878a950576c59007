"""The event loop every role runs on."""

from __future__ import annotations

import asyncio
import contextlib
import gc

# Young-generation threshold (CPython's default is 700 allocations): a worker batch or an ingress
# request allocates thousands of short-lived containers, and at 700 the collector runs in the middle
# of them, examining objects that are about to be freed by reference counting and promoting them
# to the older generations, whose collections walk the whole heap.
GC_THRESHOLDS = (10_000, 20, 20)


def install_fast_loop() -> None:
    """uvloop when installed (a dependency on Linux and macOS); the stdlib loop otherwise.

    Measured in benchmarks/: x1.27 ingress requests/s; the worker gains too (faust, aiokafka and
    asyncpg all spend their time in the loop).
    """
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def tune_gc() -> None:
    """Call once the process has imported and built what it keeps for its lifetime (the app, its
    tables and mappings): those objects are moved out of the collector's reach (``gc.freeze``), so
    full collections walk only what was allocated since, and the young generation is collected
    less often (``GC_THRESHOLDS``). Reference counting still frees almost everything at once; only
    cycles wait a little longer for the collector."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has stopped; its cancellation is not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
