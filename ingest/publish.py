"""Publishing verified records to Kafka: a 2xx is returned only after the broker acknowledged it,
or, with a spool configured (``SPOOL_DIR``), after the record was fsynced to the local spool.

With a spool, a record goes to Kafka directly while the spool is empty; if the broker does not
acknowledge within ``ack_timeout`` it is spooled instead (a late ack then makes a duplicate, which
the idempotent warehouse absorbs). While the spool holds records, new records are appended behind
them (so the order into Kafka is the order of acceptance, and nobody waits for a dead broker), and
a background drainer publishes them in order, removing a segment once all of it is acknowledged.

A record the broker will never take (over ``KAFKA_MAX_RECORD_BYTES``, or refused by the broker or
the producer for its size) is :class:`RecordRefused`: never spooled (it would stop the drain for
everything behind it) but answered 413; one already in the spool is moved to ``<spool>/refused/``
with an error logged, and the drain goes on.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2

from canvas_stream.errors import CanvasStreamError
from canvas_stream.metrics import SPOOL_BYTES, SPOOL_RECORDS
from canvas_stream.probes import CachedProbe
from ingest import coarse_timeout
from ingest.spool import Spool, SpoolFull

log = structlog.get_logger(__name__)

BROKER_PROBE_TIMEOUT = 2.0

DRAIN_CHUNK = 500
BATCH_BYTES = 256 * 1024  # per partition; below brokers' 1 MB message.max.bytes default
MAX_RECORD_BYTES = 1_000_000  # default of KAFKA_MAX_RECORD_BYTES: below Kafka's 1,048,588 message.max.bytes


class PublishFailed(CanvasStreamError):
    """The broker did not acknowledge in time; the caller answers 503 (Canvas retries)."""

    public = "event store unavailable; retry later"


class RecordRefused(PublishFailed):
    """The broker (or the producer) refuses this record itself, for its size: no retry can help."""

    public = "event too large for the event store"


# What the broker or the producer answers for one record that no retry will get in.
REFUSED_RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


class SpoolFullError(PublishFailed):
    """The broker is unavailable and the local spool is full."""

    public = "event store unavailable and local spool full; retry later"


async def ensure_topic(bootstrap: str, name: str, partitions: int, replication: int = 1) -> None:
    """Create the deliveries topic with enough partitions to scale workers; fine if it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=replication)])
    except TopicAlreadyExistsError:
        pass
    except KafkaError as exc:
        if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
    finally:
        await admin.close()


class CachedPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client), with the hash cached
    per key: aiokafka computes murmur2 in Python (~10 us per record on the benchmark host) and our
    keys (courses, users) repeat. Same partition for every key as the default; bounded memory."""

    MAX_KEYS = 16_384

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class KafkaPublisher:
    """One producer (acks=all), started lazily so the ingress survives a broker outage; optionally
    backed by a durable :class:`~ingest.spool.Spool`."""

    def __init__(self, bootstrap: str, topic: str, *, ack_timeout: float = 5.0, spool: Spool | None = None,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.ack_timeout = ack_timeout
        self.max_record_bytes = max_record_bytes
        self.spool = spool
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._queue: list[tuple[bytes, bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.broker_probe = CachedProbe(self._broker_answers, timeout=min(ack_timeout, BROKER_PROBE_TIMEOUT))

    async def _ensure_started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    linger_ms=1,
                    # Room for every record that arrives while a produce request is in flight: at
                    # aiokafka's 16 KiB (~7 live events) a full batch made each later send wait for
                    # it to drain (asyncio.wait with a timer per waiting send) and started a new one.
                    max_batch_size=BATCH_BYTES,
                    max_request_size=4 * 1024 * 1024,
                    request_timeout_ms=int(self.ack_timeout * 1000),
                    compression_type=None,
                    partitioner=CachedPartitioner(),
                )
                try:
                    await asyncio.wait_for(producer.start(), timeout=self.ack_timeout)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await self._stop_producer(producer)
                    raise PublishFailed(f"broker unavailable: {exc.__class__.__name__}") from exc
                self._producer = producer
        return self._producer

    async def start(self) -> None:
        self._stopping = False
        if self.spool is not None:
            self._export_spool_depth()
            self._drainer = asyncio.create_task(self._drain_forever(), name="spool-drainer")
        try:
            await self._ensure_started()
        except PublishFailed as exc:
            log.warning("kafka not reachable yet; will retry on first publish", error=str(exc))

    async def publish(self, key: bytes, value: bytes) -> None:
        """Return once the broker acknowledged the record, or the spool fsynced it; else PublishFailed."""
        if len(value) > self.max_record_bytes:  # refused here as a broker would (tansu takes any size)
            raise RecordRefused(f"record of {len(value)} bytes, over KAFKA_MAX_RECORD_BYTES ({self.max_record_bytes})")
        if self.spool is not None and self.spool.pending:
            await self._spool_append(key, value)
            return
        try:
            await self._send(key, value)
        except RecordRefused:
            raise  # spooled, it would stop the drain for everything behind it
        except PublishFailed as exc:
            if self.spool is None:
                raise
            log.warning("broker did not acknowledge; spooling", error=str(exc))
            await self._spool_append(key, value)

    async def _send(self, key: bytes, value: bytes) -> None:
        producer = self._producer
        if producer is None:  # no coroutine per record once started
            producer = await self._ensure_started()
        try:
            # On the loop's shared timer: no task (wait_for) and no timer (asyncio.timeout) per record.
            with coarse_timeout.timeout(self.ack_timeout):
                # send_and_wait without its own coroutine frame: queued, then acknowledged
                delivered = await producer.send(self.topic, value, key=key)
                await delivered
        except REFUSED_RECORD_ERRORS as exc:
            raise RecordRefused(f"broker refused the record ({len(value)} bytes): {exc.__class__.__name__}") from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            raise PublishFailed(f"broker did not acknowledge: {exc.__class__.__name__}") from exc

    # -- spool: appends (group commit: one fsync for all the records waiting) ------------------

    async def _spool_append(self, key: bytes, value: bytes) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((key, value, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await future

    async def _write_queued(self) -> None:
        assert self.spool is not None
        while self._queue:
            batch, self._queue = self._queue, []
            results: list[BaseException | None]
            try:
                results = await asyncio.to_thread(self.spool.append_many, [(k, v) for k, v, _ in batch])
            except Exception as exc:  # disk error: nothing of this batch is promised
                log.error("spool write failed", error=f"{exc.__class__.__name__}: {exc}")
                results = [PublishFailed(f"spool write failed: {exc.__class__.__name__}")] * len(batch)
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if result is None:
                    future.set_result(None)
                elif isinstance(result, SpoolFull):
                    log.warning("spool full; refusing", max_bytes=self.spool.max_bytes)
                    future.set_exception(SpoolFullError(str(result)))
                else:
                    future.set_exception(result if isinstance(result, PublishFailed) else PublishFailed(str(result)))
            self._export_spool_depth()
            self._wake.set()

    # -- spool: draining ---------------------------------------------------------------------

    async def _drain_forever(self) -> None:
        assert self.spool is not None
        backoff = 0.5
        # A flag as well as cancel(): Python 3.11's wait_for can turn a cancellation that races its
        # own timeout into TimeoutError, which the retry below would swallow, looping forever.
        while not self._stopping and not self._cancel_requested():
            try:
                drained = await self._drain_once()
            except PublishFailed as exc:
                log.info("spool: broker still unavailable", error=str(exc), pending=self.spool.pending,
                         retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception as exc:  # never let the drainer die
                log.error("spool: drain error", error=f"{exc.__class__.__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            if not drained:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    @staticmethod
    def _cancel_requested() -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    async def _drain_once(self) -> bool:
        """Publish every spooled record, oldest first; False when there was nothing to do."""
        assert self.spool is not None
        if not self.spool.pending:
            return False
        segments = self.spool.sealed()
        if not segments:
            self.spool.seal()
            segments = self.spool.sealed()
        for segment in segments:
            records = await asyncio.to_thread(self.spool.read, segment)
            while segment.acked < len(records):
                chunk = records[segment.acked : segment.acked + DRAIN_CHUNK]
                acked = await self._send_in_order(chunk)
                self.spool.acknowledge(segment, segment.acked + acked)
                self._export_spool_depth()
                if acked < len(chunk):
                    raise PublishFailed("broker stopped acknowledging spooled records")
            await asyncio.to_thread(self.spool.remove, segment)
            log.info("spool: segment delivered to kafka", segment=segment.path.name, records=len(records))
        self._export_spool_depth()
        return True

    async def _send_in_order(self, chunk: list[tuple[bytes, bytes]]) -> int:
        """Send a chunk; return how many records from its start the broker acknowledged."""
        producer = await self._ensure_started()
        try:  # probe with the first record alone, so a dead broker does not get the whole chunk queued
            await self._send(*chunk[0])
        except RecordRefused as exc:
            assert self.spool is not None
            where = await asyncio.to_thread(self.spool.set_aside, *chunk[0])
            log.error("spool: the broker refuses a spooled record; set aside, the drain goes on",
                      error=str(exc), path=str(where))
            return 1
        except PublishFailed:
            return 0
        futures: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(self.ack_timeout * 2):
                for key, value in chunk[1:]:
                    futures.append(await producer.send(self.topic, value, key=key))
                if futures:
                    await asyncio.wait(futures)
        except (KafkaError, OSError, TimeoutError):
            pass
        acked = 0
        for future in futures:
            if not future.done() or future.cancelled() or future.exception() is not None:
                error = "not acknowledged in time" if not future.done() or future.cancelled() else future.exception()
                log.info("spool: record not acknowledged; will resend from it", error=repr(error)[:200])
                break
            acked += 1
        for future in futures[acked:]:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, so asyncio does not warn about it
        return 1 + acked

    def _export_spool_depth(self) -> None:
        assert self.spool is not None
        SPOOL_RECORDS.set(self.spool.pending)
        SPOOL_BYTES.set(self.spool.stats()["bytes"])

    def spool_stats(self) -> dict[str, int] | None:
        """Depth of the spool for /readyz (None without a spool)."""
        return None if self.spool is None else self.spool.stats()

    async def ready(self) -> bool:
        """The broker answers a metadata request for our topic now (bounded, cached for a moment)."""
        return await self.broker_probe()

    async def _broker_answers(self) -> bool:
        # A fresh metadata request, not the producer's cached metadata: a hung broker must show.
        producer = await asyncio.shield(self._ensure_started())  # bounded by ack_timeout itself
        metadata = await producer.client.fetch_all_metadata()
        return bool(metadata.partitions_for_topic(self.topic))

    async def stop(self) -> None:
        self._stopping = True
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.wait({self._drainer}, timeout=self.ack_timeout + 10)
            self._drainer = None
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        if self.spool is not None:
            self.spool.close()
        if self._producer is not None:
            await self._stop_producer(self._producer)
            self._producer = None

    async def _stop_producer(self, producer: AIOKafkaProducer) -> None:
        """Stop a producer without ever hanging shutdown on a broker that stopped answering."""
        try:
            await asyncio.wait_for(producer.stop(), timeout=self.ack_timeout + 5)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("kafka producer did not stop cleanly", error=exc.__class__.__name__)
