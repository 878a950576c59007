"""ingest.deadline.publish_within_deadline: an acknowledged record is never answered 503, one still
pending a moment before the deadline is, and its publish goes on (a late ack is counted)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import REGISTRY

from ingest.deadline import DEADLINE_KEY, NotAcknowledgedInTime, publish_within_deadline


class Request(dict):
    """What publish_within_deadline reads of an aiohttp request: its keys and ``app``."""

    def __init__(self, deadline: float | None) -> None:
        super().__init__()
        if deadline is not None:
            self[DEADLINE_KEY] = deadline
        self.app: dict[Any, Any] = {}


def late_acks() -> float:
    return REGISTRY.get_sample_value("canvas_stream_ingress_late_acknowledgements_total") or 0.0


async def test_acknowledged_in_time_and_failures_are_reported_per_record():
    async def publish(key: bytes, value: bytes) -> None:
        if value == b"bad":
            raise ConnectionError("broker said no")

    loop = asyncio.get_running_loop()
    outcomes = await publish_within_deadline(Request(loop.time() + 5), publish, [(b"k", b"ok"), (b"k", b"bad")])
    assert outcomes[0] is None and isinstance(outcomes[1], ConnectionError)
    assert await publish_within_deadline(Request(None), publish, []) == []


async def test_pending_at_the_deadline_is_not_acknowledged_in_time_and_keeps_going():
    done = asyncio.Event()

    async def slow(key: bytes, value: bytes) -> None:
        await asyncio.sleep(0.6)
        done.set()

    loop = asyncio.get_running_loop()
    before = late_acks()
    started = loop.time()
    request = Request(started + 0.3)
    [outcome] = await publish_within_deadline(request, slow, [(b"k", b"v")])
    assert isinstance(outcome, NotAcknowledgedInTime)
    assert loop.time() - started < 0.3  # a moment before the deadline, to leave time to answer
    await asyncio.wait_for(done.wait(), 2)  # the publish was not cancelled ...
    await asyncio.sleep(0.01)
    assert late_acks() == before + 1  # ... and its late acknowledgement is counted


async def test_an_ack_that_races_the_deadline_is_answered_as_acknowledged():
    """The loop is blocked while the broker acknowledges, so the ack and the deadline's cancellation
    arrive in the same loop iteration: the record is durable, and the answer must say so."""

    async def acked_while_the_loop_is_blocked(key: bytes, value: bytes) -> None:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # past the deadline, before the ack is seen

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.2
    request = Request(deadline)
    timeout = asyncio.timeout_at(deadline)  # as ResponseDeadline wraps the handler (its coarse_timeout is alike)
    async with timeout:
        outcomes = await publish_within_deadline(request, acked_while_the_loop_is_blocked, [(b"k", b"v")])
    assert outcomes == [None]
    assert timeout.expired()  # the deadline did fire; the answer is still the acknowledged one
