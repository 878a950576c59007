"""Deadlines on one shared timer per event loop: ``timeout_at``/``timeout`` as asyncio's, for the hot path.

Why: ``asyncio.timeout_at`` arms a loop timer per use (with uvloop a handle and a libuv timer, made
and torn down) behind several Python frames, and the ingress used three per request (the response
deadline, the broker wait, the acknowledgement timeout) for deadlines that almost never fire: ~10 us
each on the benchmark host. Here every deadline of a loop goes into a wheel of ``TICK``-second slots
(a list append), and one periodic callback, running only while something is armed, fires the due
ones. A deadline fires at most one tick (plus the loop's own lateness) after its time, never more
than a couple of milliseconds (a loop's clock resolution) before it.

``with timeout_at(when):`` (a plain ``with``, inside a task) behaves like ``async with
asyncio.timeout_at(when):``: the task is cancelled at ``when`` and the cancellation comes out as
``TimeoutError``; a cancellation from anyone else stays a cancellation. Pure asyncio: no I/O.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from types import TracebackType

__all__ = ["TICK", "Entry", "Wheel", "timeout", "timeout_at", "wheel"]

TICK = 0.05  # seconds: the resolution of every deadline armed here
_PER_SECOND = 1 / TICK
_EARLY = 0.002  # a loop may run a timer this much before its time (clock resolution): still that slot's sweep


class Entry:
    """One armed deadline: ``action`` runs once when it is due, unless disarmed first."""

    __slots__ = ("action", "fired")

    def __init__(self, action: Callable[[], object]) -> None:
        self.action: Callable[[], object] | None = action
        self.fired = False

    def disarm(self) -> None:
        self.action = None

    def fire(self) -> None:
        action = self.action
        if action is not None:
            self.action = None
            self.fired = True
            action()


class Wheel:
    """The deadlines of one loop, in slots of ``TICK`` seconds; swept by one timer while any are armed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[Entry]] = {}
        self._next = 0  # the first slot not swept yet
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, when: float, action: Callable[[], object]) -> Entry:
        """Run ``action`` once ``loop.time()`` has passed ``when`` (at most one tick later)."""
        entry = Entry(action)
        if self._handle is None:
            self._next = int(self._loop.time() * _PER_SECOND)
            self._handle = self._loop.call_at((self._next + 1) * TICK, self._sweep)
        slot = int(when * _PER_SECOND) + 1  # swept when loop.time() >= slot * TICK > when
        if slot < self._next:
            slot = self._next
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [entry]
        else:
            bucket.append(entry)
        return entry

    def _sweep(self) -> None:
        now = int((self._loop.time() + _EARLY) * _PER_SECOND)
        slots = self._slots
        for slot in range(self._next, now + 1):
            bucket = slots.pop(slot, None)
            if bucket is not None:
                for entry in bucket:
                    if entry.action is not None:
                        try:
                            entry.fire()
                        except Exception:  # one failing action must not stop the others (never expected)
                            self._loop.call_exception_handler({"message": "deadline action failed"})
        self._next = now + 1
        # Sweeps at slot boundaries: an entry of slot s fires at the sweep of time s * TICK.
        self._handle = self._loop.call_at((now + 1) * TICK, self._sweep) if slots else None

    def __len__(self) -> int:
        return sum(len(b) for b in self._slots.values())


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wheel] = weakref.WeakKeyDictionary()
_last: tuple[asyncio.AbstractEventLoop | None, Wheel | None] = (None, None)


def wheel(loop: asyncio.AbstractEventLoop | None = None) -> Wheel:
    """The wheel of ``loop`` (default: the running loop), made on first use."""
    global _last
    loop = loop or asyncio.get_running_loop()
    last_loop, last_wheel = _last
    if last_loop is loop and last_wheel is not None:
        return last_wheel
    found = _WHEELS.get(loop)
    if found is None:
        found = _WHEELS[loop] = Wheel(loop)
    _last = (loop, found)
    return found


class timeout_at:
    """``with timeout_at(when):`` in a task: ``TimeoutError`` if ``when`` (``loop.time()``) passes first."""

    __slots__ = ("_cancelling", "_entry", "_task", "_when")

    def __init__(self, when: float) -> None:
        self._when = when

    def __enter__(self) -> timeout_at:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout_at must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._entry = wheel(task.get_loop()).arm(self._when, task.cancel)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        entry = self._entry
        entry.action = None
        if entry.fired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def expired(self) -> bool:
        """True when the deadline fired (the task was cancelled by it)."""
        return self._entry.fired


def timeout(delay: float) -> timeout_at:
    """``with timeout(seconds):``, the relative form."""
    return timeout_at(asyncio.get_running_loop().time() + delay)
