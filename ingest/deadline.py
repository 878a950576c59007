"""Canvas's 15-second contract: every answer on its routes is given within RESPONSE_DEADLINE_SECONDS.

Canvas counts an answer slower than 15 s as a timeout against the subscription (the lower of its two
deactivation thresholds), whatever the answer. So whatever hangs (the body, a key fetch, the broker,
a spool fsync, a database lookup) must turn into a 503, which Canvas retries, before then.

How, in three parts:

* :class:`ResponseDeadline` (run inside ``ingest.answers.answers_middleware``) runs the handler of a
  Canvas route under a timeout at the request's deadline (on the loop's shared timer,
  :mod:`ingest.coarse_timeout`) and answers 503 when it fires. The body is read inside the handler,
  so the deadline covers it (the headers are bounded by the server's keep-alive timeout).
* :func:`read_body` bounds the body read by ``HTTP_READ_TIMEOUT_SECONDS`` and by the deadline, a
  moment before it, so a slow sender gets its own answer (408) rather than the generic 503.
* :func:`publish_within_deadline` waits for the broker only until a moment before the deadline, in
  tasks the deadline does not cancel. A record acknowledged by then is answered 2xx, always, even if
  the deadline fires in the same instant. A record not acknowledged by then is answered 503 while its
  publish goes on: if it is acknowledged later it is durable, and Canvas's retry of the 503 becomes a
  duplicate, which the warehouse absorbs (event id / notice id keys). Counted as a late acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import CoroutineType

import structlog
from aiohttp import web

from canvas_stream.errors import CanvasStreamError
from canvas_stream.metrics import LATE_ACKNOWLEDGEMENTS, RESPONSE_DEADLINE_EXCEEDED
from ingest import coarse_timeout
from ingest.budget import COUNTED_ROUTES
from ingest.http import error

__all__ = [
    "DEADLINE_KEY",
    "NotAcknowledgedInTime",
    "ResponseDeadline",
    "publish_within_deadline",
    "read_body",
]

log = structlog.get_logger(__name__)

DEADLINE_KEY = web.RequestKey("response_deadline", float)  # loop.time() by which the answer must be given
LATE_PUBLISHES_KEY = web.AppKey("late_publishes", set)
DEADLINE_MESSAGE = "no answer within the response deadline; retry later"


class NotAcknowledgedInTime(CanvasStreamError):
    """The broker had not acknowledged a record a moment before the deadline (it may still)."""

    public = "event store did not acknowledge within the response deadline; retry later"


def margin(seconds: float) -> float:
    """How long before the deadline the body read and the broker wait give up: enough to answer."""
    return min(0.5, seconds * 0.05)


class ResponseDeadline:
    """The response deadline of ``routes``, in parts a middleware composes: :meth:`arm` before the
    handler, ``with`` the timeout it returns around it, :meth:`exceeded` for the answer when it fired.

    Parts rather than a middleware of its own so that ``answers_middleware`` can run it inside its
    own frame: each middleware layer is a coroutine and a call per request.
    """

    __slots__ = ("guarded", "seconds")

    def __init__(self, seconds: float, routes: Iterable[str] = COUNTED_ROUTES) -> None:
        self.seconds = seconds
        self.guarded = frozenset(routes)

    def arm(self, request: web.Request, route: str | None) -> coarse_timeout.timeout_at | None:
        """The timeout to run the handler in (not entered yet), None when ``route`` has no deadline.

        Armed on the loop's shared timer (:mod:`ingest.coarse_timeout`): a timer per request cost
        ~10 us of CPU for a deadline that almost never fires; this one fires at most one tick late.
        """
        if route not in self.guarded:
            return None
        deadline = asyncio.get_running_loop().time() + self.seconds - coarse_timeout.TICK
        request[DEADLINE_KEY] = deadline
        return coarse_timeout.timeout_at(deadline)

    def exceeded(self, route: str | None) -> web.Response:
        """Count and log a deadline that fired; the 503 to answer."""
        RESPONSE_DEADLINE_EXCEEDED.labels(route).inc()
        log.warning("no answer within the response deadline; answering 503", route=route, seconds=self.seconds)
        return error(503, DEADLINE_MESSAGE)


def _read_deadline(request: web.Request, read_timeout: float) -> float:
    loop = asyncio.get_running_loop()
    until = loop.time() + read_timeout
    deadline = request.get(DEADLINE_KEY)
    if deadline is not None:
        until = min(until, deadline - margin(deadline - loop.time()))
    return until


async def read_body(request: web.Request, read_timeout: float) -> bytes:
    """The whole body, within ``read_timeout`` and before the response deadline; raises TimeoutError
    (answer 408) or ``web.HTTPRequestEntityTooLarge`` (413)."""
    if request.content.is_eof():  # the body came with the headers (a Canvas event does): no wait, no timer
        return await request.read()
    async with asyncio.timeout_at(_read_deadline(request, read_timeout)):
        return await request.read()


def _late_publishes(request: web.Request) -> set[asyncio.Task[None]]:
    app = request.app
    if LATE_PUBLISHES_KEY not in app:
        app[LATE_PUBLISHES_KEY] = set()
    tasks: set[asyncio.Task[None]] = app[LATE_PUBLISHES_KEY]
    return tasks


def _acknowledged(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _follow_late(request: web.Request, task: asyncio.Task[None]) -> None:
    """Keep a publish answered 503 running, and say what became of it."""
    tasks = _late_publishes(request)
    tasks.add(task)

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if _acknowledged(t):
            LATE_ACKNOWLEDGEMENTS.inc()
            log.info("record acknowledged after its request was answered 503: durable; a retry is a duplicate")
        elif not t.cancelled():
            t.exception()  # retrieved: the 503 already said it is not stored

    task.add_done_callback(done)


def _task_of(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[None]) -> asyncio.Future[None]:
    """``asyncio.ensure_future``, with its type checks and loop lookup skipped for a coroutine."""
    if type(awaitable) is CoroutineType:
        return loop.create_task(awaitable)  # unnamed: uvloop names a task by a set_name call after making it
    return asyncio.ensure_future(awaitable)


async def publish_within_deadline(
    request: web.Request, publish: Callable[[bytes, bytes], Awaitable[None]], records: Sequence[tuple[bytes, bytes]]
) -> list[BaseException | None]:
    """Publish ``records`` at once; per record, None once acknowledged, else why not (the exception,
    or :class:`NotAcknowledgedInTime` when the wait ended a moment before the deadline)."""
    if not records:
        return []
    loop = asyncio.get_running_loop()
    tasks = [_task_of(loop, publish(k, v)) for k, v in records]
    deadline = request.get(DEADLINE_KEY)
    # One future for the whole wait: set when the last publish is done, or (on the loop's shared
    # timer) a moment before the deadline; cheaper than asyncio.wait's timer, set and callbacks.
    waiter = loop.create_future()
    pending = len(tasks)

    def one_done(task: asyncio.Future[None]) -> None:
        nonlocal pending
        pending -= 1
        if pending == 0 and not waiter.done():
            waiter.set_result(None)

    def wait_over() -> None:
        if not waiter.done():
            waiter.set_result(None)

    for task in tasks:
        task.add_done_callback(one_done)
    entry = None if deadline is None else coarse_timeout.wheel(loop).arm(  # fires within one tick of its time
        deadline - margin(deadline - loop.time()) - coarse_timeout.TICK, wait_over)
    try:
        await waiter
    except asyncio.CancelledError:
        # The deadline (or a shutdown) fired while we waited. Records the broker acknowledged are
        # durable: when all of them are, the answer is the 2xx they earned, never a 503.
        if deadline is not None and loop.time() >= deadline and all(_acknowledged(t) for t in tasks):
            return [None] * len(tasks)
        for task in tasks:
            if not task.done():
                _follow_late(request, task)
            elif not task.cancelled():
                task.exception()
        raise
    finally:
        if entry is not None:
            entry.disarm()
    outcomes: list[BaseException | None] = []
    for task in tasks:
        if not task.done():
            _follow_late(request, task)
            outcomes.append(NotAcknowledgedInTime())
        else:
            outcomes.append(NotAcknowledgedInTime() if task.cancelled() else task.exception())
    return outcomes


async def settle_late_publishes(app: web.Application, timeout: float) -> None:
    """At shutdown: give publishes answered 503 a bounded chance to finish before the producer stops."""
    tasks = app.get(LATE_PUBLISHES_KEY) or set()
    if tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait(list(tasks), timeout=timeout)
