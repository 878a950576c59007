"""faust-streaming without the per-message work this worker does not need.

faust keeps its agents, streams, rebalancing, offset tracking and commits; what it does for every
message that this worker does not need is replaced:

* :class:`LeanMonitor`: faust's Monitor without its per-message bookkeeping (four calls and several
  dict and deque updates per message that only faust's own stats pages read; our metrics are
  Prometheus counters updated once per batch). Rebalance, commit and send statistics stay.
* :func:`take_batches`: an agent's batches read straight from its channel, instead of
  ``Stream.take_events``, whose stream iterator yields to the loop once per event (``sleep(0)``: a
  loop iteration, with its ``epoll_wait``, per message), runs a processor coroutine and sensors per
  event, and acks every event once more when the batch is done.
* :class:`LeanTopic`: a topic of raw keys and values hands each message to its event as is, where
  faust's compiled decoder runs both through the serializer registry and the ``raw`` codec (which
  returns the bytes it was given), ~2.3 us per message.
* :class:`LeanConsumer`: faust's fetch loop (``Consumer._drain_messages``) hands each fetched message
  to the conductor inside ``Service.wait_first(callback(message), suspend_flow.wait())``, which makes
  four tasks and an ``asyncio.wait`` per message, so that a rebalance (``stop_flow``) can interrupt
  a callback blocked on a full stream buffer. Here the messages of one fetch are handed over in
  order by one task under one ``wait_first``: a rebalance still interrupts the delivery at once,
  and the messages not delivered yet keep their read offset unmoved, so they are fetched again.
  Everything else (read-offset checks, gaps, ``commit_every``, yielding every 100 messages) is as
  in faust.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any, cast

import faust
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

__all__ = ["LeanApp", "LeanConsumer", "LeanMonitor", "LeanTopic", "LeanTransport", "take_batches"]


class LeanMonitor(Monitor):
    """faust's Monitor without its per-message bookkeeping (see the module docstring)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


class LeanTopic(faust.Topic):
    """A faust Topic whose messages of raw keys and values become events without the serializers.

    With no key or value type and the ``raw`` codec on both, faust's decoder returns
    ``create_event(message.key, message.value, message.headers, message)`` (the registry passes None
    through, and ``raw`` returns the bytes it is given); this one calls that directly. Any other
    topic keeps faust's decoder.
    """

    def _compile_decode(self) -> None:
        super()._compile_decode()
        schema, conf = self.schema, self.app.conf
        key_serializer = schema.key_serializer or conf.key_serializer
        value_serializer = schema.value_serializer or conf.value_serializer
        if schema.key_type is None and schema.value_type is None and key_serializer == value_serializer == "raw":
            create_event = self.app.create_event

            async def decode(message: Any, *, propagate: bool = False) -> Any:
                return create_event(message.key, message.value, message.headers, message)

            self.decode = decode  # type: ignore[method-assign]


YIELD_EVERY = 100  # as faust: messages handed over between two yields to the loop


class LeanConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, handing each fetch to the conductor under one ``wait_first``."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by the worker tests
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        sleep = asyncio.sleep

        async def deliver(fetched: list[tuple[Any, Any]]) -> None:
            """The messages of one fetch, in order, as faust's loop would deliver them."""
            since_yield = 0
            for tp, message in fetched:
                since_yield += 1
                if since_yield > YIELD_EVERY:
                    await sleep(0)
                    since_yield = 0
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is None or offset >= r_offset:
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await callback(message)
                    set_read_offset(tp, offset)
                else:
                    self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(AsyncIterator, self.getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    fetched = [item async for item in ait]
                    if fetched:
                        await self.wait_first(deliver(fetched), self.suspend_flow.wait())
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    def _new_consumer_thread(self) -> LeanConsumerThread:
        return LeanConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LeanConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread with the fetch wait taken from the app (faust fixes it at 1,500 ms)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its Fetcher at start(), which has not happened yet.
        consumer._fetch_max_wait_ms = cast(LeanApp, self.app).fetch_max_wait_ms
        return consumer


class LeanTransport(faust_aiokafka.Transport):
    """The aiokafka transport with :class:`LeanConsumer`."""

    Consumer = LeanConsumer


class LeanApp(faust.App):
    """A faust App on :class:`LeanTransport` (``kafka://`` brokers).

    ``fetch_max_wait_ms``: how long one fetch may wait at the broker (faust fixes 1,500 ms).
    """

    fetch_max_wait_ms: int = 100

    def _new_transport(self) -> Any:
        return LeanTransport(self.conf.broker_consumer, self)


async def take_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """Batches of up to ``max_`` events from the agent's ``stream``, read straight from its channel.

    What faust's stream iterator does per event and the worker relies on is done here too: an
    event of an older consumer generation (or one read while the flow is stopped for a rebalance)
    is skipped and acked, as faust skips it; every other message is tracked as unacked, so faust's
    commits and rebalances wait for its ack; the monitor's per-partition inbound time is kept (faust's
    stall detector reads it). Events are *not* acked here: the caller acks each one (``stream.ack``)
    once it is safely written, which is what lets faust commit its offset.

    A batch is yielded when it is full, or ``within`` seconds after the wait for it began if it has
    events (as ``take_events``).
    """
    app = stream.app
    queue = stream.channel.queue
    consumer = app.consumer
    track = consumer.unacked.add
    acks_enabled_for = app.topics.acks_enabled_for
    flow_active = app.flow_control.is_active
    monitor = app.monitor
    inbound = monitor.stream_inbound_time if monitor is not None else {}
    loop = asyncio.get_running_loop()
    while True:
        batch: list[Any] = []
        until = loop.time() + within
        while len(batch) < max_:
            if queue.empty():
                if batch and loop.time() >= until:
                    break
                try:
                    # ``within`` bounds the wait only once there is something to yield.
                    async with asyncio.timeout_at(until if batch else None):
                        event = await queue.get()
                except TimeoutError:
                    break
                except StopAsyncIteration:  # the channel closed (shutdown): what was taken stays unacked
                    return
            else:
                event = queue.get_nowait()
            if not batch and loop.time() >= until:
                until = loop.time() + within  # the first event came after a quiet spell: give it company
            message = event.message
            if not flow_active() or message.generation_id != app.consumer_generation_id:
                await stream.ack(event)  # as faust's iterator: a skipped event is acked
                continue
            if not message.tracked and acks_enabled_for(message.topic):
                message.tracked = True
                track(message)
            batch.append(event)
        if batch:
            now = monotonic()
            for event in batch:
                inbound[event.message.tp] = now
            yield batch
