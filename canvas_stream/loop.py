"""The event loop every role runs on."""

from __future__ import annotations

import asyncio


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
