"""ingest.coarse_timeout: asyncio.timeout_at's semantics on one shared timer, at most one tick late."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ingest import coarse_timeout
from ingest.coarse_timeout import TICK, timeout, timeout_at


async def test_a_deadline_fires_within_one_tick_of_its_time_and_becomes_timeout_error():
    loop = asyncio.get_running_loop()
    for delay in (0.0, 0.01, 0.12, 0.2):
        started = loop.time()
        with pytest.raises(TimeoutError), timeout_at(started + delay) as t:
            await asyncio.sleep(5)
        elapsed = loop.time() - started
        assert t.expired()
        assert delay - 0.003 <= elapsed < delay + TICK + 0.03, (delay, elapsed)
    assert asyncio.current_task().cancelling() == 0  # every cancellation it made was taken back


async def test_an_answer_in_time_disarms_the_deadline():
    fired: list[int] = []
    wheel = coarse_timeout.wheel()
    entry = wheel.arm(asyncio.get_running_loop().time() + 0.05, lambda: fired.append(1))
    entry.disarm()
    with timeout(0.05) as t:
        await asyncio.sleep(0)
    await asyncio.sleep(0.15)  # past both deadlines
    assert not t.expired() and fired == []
    assert len(wheel) == 0  # swept: nothing is kept once due


async def test_someone_elses_cancellation_stays_a_cancellation():
    async def guarded() -> None:
        with timeout(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_handler_that_catches_the_deadline_leaves_the_task_uncancelled():
    """As asyncio.Timeout: when the body swallows the cancellation, nothing is left pending on the task."""
    with timeout(0.01) as t, contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(1)
    assert t.expired()
    assert asyncio.current_task().cancelling() == 0
    await asyncio.sleep(0)  # the task is not cancelled again


async def test_many_deadlines_share_one_timer_and_fire_in_their_own_tick():
    loop = asyncio.get_running_loop()
    wheel = coarse_timeout.wheel()
    start = loop.time()
    fired: dict[int, float] = {}
    for i in range(200):
        wheel.arm(start + (i % 4) * 0.05, lambda i=i: fired.setdefault(i, loop.time() - start))
    await asyncio.sleep(0.3)
    assert len(fired) == 200
    for i, at in fired.items():
        assert (i % 4) * 0.05 - 0.003 <= at < (i % 4) * 0.05 + TICK + 0.03, (i, at)
