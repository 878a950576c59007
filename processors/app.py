"""The faust-streaming worker: a thin adapter from a Kafka topic to ``WarehouseSink``.

Offsets move only after the database transaction that holds a batch committed. Writes are
pipelined: while batch N is being written (PostgreSQL working), the agent already prepares batch
N+1 (Python working). Batches are read from the agent's channel by ``lean_faust.take_batches``,
which never acks: the write task acks each message (``stream.ack``, the only reference faust
holds) only after the transaction committed, and only then may faust commit its offset. One write
is in flight at a time, so batches commit in order. If a write fails or is cancelled (shutdown,
crash), its messages are marked so that faust cannot commit them; they are redelivered.

A write that fails (what the sink cannot settle by retrying or quarantining) stops the worker at
once (``app.crash``; an agent that raises does too, ``CrashingSupervisor``). faust's default
supervisor would restart the agent on the batches behind it, and their acks would let faust commit
past the failed one (its commit finds no hole when a partition has no committed offset yet, nor a
hole of one message). The process exits non-zero and its supervisor (compose's ``restart``)
starts it again from the committed offsets.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import structlog
from mode import CrashingSupervisor
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream.loop import install_fast_loop, tune_gc
from canvas_stream.metrics import (
    BATCH_COMMIT_DURATION,
    EVENT_AGE,
    EVENT_SHARDS,
    EVENTS_WRITTEN,
    LAST_COMMIT,
    QUARANTINED,
    UNKNOWN_EVENTS,
    UNKNOWN_FIELDS,
    observe_many,
)
from canvas_stream.probes import database_probe
from canvas_stream.settings import Settings
from processors.batch import PreparedBatch, batch_of, prepare_one
from processors.lean_faust import LeanApp, LeanMonitor, LeanTopic, take_batches
from processors.maintenance import TICK_SECONDS, Maintenance
from processors.normalize import IdPolicy
from processors.normalize.model import EPOCH
from processors.privacy.guard import ErasureGuard
from processors.privacy.pseudonymize import Pseudonymizer
from processors.sink import WarehouseSink
from processors.watchdog import WorkerHealth

log = structlog.get_logger(__name__)

MAX_LABELS = 500
# Messages prepared between two yields to the event loop, so the statements of the batch being written
# keep flowing to PostgreSQL while the next batch is prepared.
PREPARE_SLICE = 100


def observe_commit(batch: PreparedBatch, seconds: float) -> None:
    """Metrics of a committed batch: its latency, and each event's age (commit time minus event time)."""
    now = time.time()
    BATCH_COMMIT_DURATION.observe(seconds)
    LAST_COMMIT.set(now)
    ages = [max(0.0, now - event.event_time.timestamp())
            for item in batch.items if item.normalized is not None
            for event in item.normalized.events
            if event.event_time != EPOCH]  # the epoch: the event carries no time
    observe_many(EVENT_AGE, ages)


class ShardReport:
    """Logs each Canvas shard that events name, once, so an operator can tell CANVAS_HOME_SHARD.

    With the setting unset each event's own shard counts as home, which is right only while events
    name one shard: a second one is logged as a warning.
    """

    def __init__(self, home_shard: int | None) -> None:
        self.home_shard = home_shard
        self.seen: set[int] = set()

    def update(self, shards: dict[int, int]) -> None:
        for shard, count in shards.items():
            if shard not in self.seen and len(self.seen) < MAX_LABELS:
                self.seen.add(shard)
                home = "unset (each event's own shard)" if self.home_shard is None else self.home_shard
                log.info("events name a Canvas shard", shard=shard, canvas_home_shard=home)
                if self.home_shard is None and len(self.seen) == 2:
                    log.warning("events name more than one Canvas shard and CANVAS_HOME_SHARD is unset: one object "
                                "may get two ids; set CANVAS_HOME_SHARD to the institution's shard",
                                shards=sorted(self.seen))
            EVENT_SHARDS.labels(str(shard)).inc(count)


def _forbid_commit(events: Any) -> None:
    """Mark messages acked so faust's own ack of an unfinished batch cannot commit them."""
    for event in events:
        event.message.acked = True


async def prepare_sliced(values: list[bytes], ids: IdPolicy) -> PreparedBatch:
    """Decode and normalize, yielding to the loop every few messages (see ``PREPARE_SLICE``)."""
    items = []
    for start in range(0, len(values), PREPARE_SLICE):
        items.extend(prepare_one(value, ids) for value in values[start:start + PREPARE_SLICE])
        await asyncio.sleep(0)
    return batch_of(items)


def kafka_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings) -> faust.App:
    """Build the faust app, its one agent and its status pages."""
    app = LeanApp(  # faust without per-message work we do not need (processors/lean_faust.py)
        settings.worker_group_id,
        broker=kafka_urls(settings.require_kafka()),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.worker_session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.worker_session_timeout_seconds / 3),
        web_enabled=settings.worker_status_port is not None,
        web_port=settings.worker_status_port or 6066,
        web_bind="0.0.0.0",
        stream_buffer_maxsize=max(4096, settings.worker_batch_size * 2),
        Monitor=LeanMonitor,
        Topic=LeanTopic,
    )
    app.fetch_max_wait_ms = settings.worker_fetch_max_wait_ms
    engine = create_async_engine(
        settings.require_database_url(), pool_size=2, max_overflow=2, pool_pre_ping=True
    )
    key = settings.pseudonymization_secret()
    # Every worker reads the erasure list (events for erased people are redacted on arrival) and,
    # with PSEUDONYMIZE, hashes personal data before its transaction (docs/privacy.md).
    sink = WarehouseSink(engine, guard=ErasureGuard(), pseudonymizer=Pseudonymizer(key) if key else None)
    app.warehouse_sink = sink  # type: ignore[attr-defined]
    ids = IdPolicy(settings.canvas_home_shard)
    shards = ShardReport(settings.canvas_home_shard)
    topic = app.topic(settings.kafka_topic, partitions=settings.kafka_partitions)
    seen_unknown: set[str] = set()

    def report_unknown(counter: Counter, names: dict[str, int], message: str) -> None:
        """Count what the mapping does not know yet; log each name once (bounded) so it can catch up."""
        for name, count in names.items():
            if name not in seen_unknown and len(seen_unknown) < MAX_LABELS:
                seen_unknown.add(name)
                log.info(message, name=name[:200])
            counter.labels(name[:100]).inc(count)

    async def write_and_release(stream: faust.StreamT, events: Any, batch: PreparedBatch) -> None:
        """Commit the batch, then release our reference to its messages: only now may faust commit them."""
        try:
            started = time.perf_counter()
            await sink.write(batch)
        except BaseException:
            _forbid_commit(events)
            raise
        for event in events:
            await stream.ack(event)
        try:  # the batch is committed: a failure here must not count as a failed write (which stops the worker)
            observe_commit(batch, time.perf_counter() - started)
            quarantined = len(batch.quarantined())
            EVENTS_WRITTEN.inc(len(batch.items) - quarantined)
            QUARANTINED.inc(quarantined)
            report_unknown(UNKNOWN_EVENTS, batch.unknown_events, "unknown event name; stored in events only")
            report_unknown(UNKNOWN_FIELDS, batch.unknown_fields, "unknown event field; kept in the payload")
            shards.update(batch.shards)
        except Exception as exc:
            log.error("metrics of a committed batch failed", error=repr(exc)[:300])

    crashing: set[asyncio.Task[None]] = set()  # a reference, so the crash is not garbage-collected

    def stop_on_failure(task: asyncio.Task[None]) -> None:
        """A failed write stops the worker now (see the module docstring), not when the next batch comes."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("batch write failed; stopping the worker, its offsets stay uncommitted", error=repr(error)[:300])
        crash = asyncio.ensure_future(app.crash(error))
        crashing.add(crash)
        crash.add_done_callback(crashing.discard)

    @app.agent(topic, supervisor_strategy=CrashingSupervisor)  # see the module docstring
    async def load_warehouse(stream: faust.StreamT) -> None:
        writing: asyncio.Task[None] | None = None  # the previous batch, committing while this one is prepared
        try:
            async for events in take_batches(stream, settings.worker_batch_size, settings.worker_batch_seconds):
                try:
                    batch = await prepare_sliced([e.message.value for e in events], ids)
                    if writing is not None:
                        await writing  # in order, one at a time; a failed write crashes the agent as before
                except BaseException:
                    _forbid_commit(events)
                    raise
                writing = asyncio.create_task(write_and_release(stream, events, batch))
                writing.add_done_callback(stop_on_failure)
        finally:
            if writing is not None and not writing.done():
                writing.cancel()  # its messages stay uncommitted: redelivered to whoever gets the partition
                await asyncio.wait({writing})

    maintenance = Maintenance(settings)  # months ahead; scheduled retention (off by default)

    @app.task
    async def maintain_at_start() -> None:
        await maintenance.tick()  # the months ahead exist before a batch needs them

    @app.timer(interval=TICK_SECONDS)
    async def maintain() -> None:
        await maintenance.tick()

    @app.on_partitions_assigned.connect
    async def log_assignment(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    # A small engine of its own, so a probe never waits behind a batch write for a pooled connection.
    probe_engine = create_async_engine(settings.require_database_url(), pool_size=1, max_overflow=0)
    health = WorkerHealth(app, sink, database_probe(probe_engine), settings.worker_stall_seconds)
    app.worker_health = health  # type: ignore[attr-defined]

    @app.timer(interval=min(5.0, settings.worker_stall_seconds / 4))
    async def watch_for_stall() -> None:
        await health.watch_once()

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """200 when PostgreSQL answers now (bounded SELECT 1), writes succeed, and the worker is not stalled."""
        body = await health.sample()
        ok = body["database"] == "ok" and not body["stalled"]
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # As a header: aiohttp refuses a content_type argument with a charset in it (this one has).
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGINT/SIGTERM (faust's Worker owns the event loop and signals)."""
    install_fast_loop()
    app = create_app(settings)
    tune_gc()
    log.info("canvas-stream worker starting", group=settings.worker_group_id, topic=settings.kafka_topic,
             batch_size=settings.worker_batch_size, stall_seconds=settings.worker_stall_seconds,
             status_port=settings.worker_status_port)
    # override_logging=False: faust would replace the root handler (plain text lines even with
    # LOG_FORMAT=json); the handler configure_logging installed stays.
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False,
                          override_logging=False)
    worker.spinner = None  # faust's terminal spinner writes cursor escape codes, even when stdout is a file
    worker.execute_from_commandline()
