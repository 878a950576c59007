"""The ingress spool against a real broker: spooling while it is dead, draining in order when it is back."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from canvas_stream.embedded.process import free_port
from ingest.publish import KafkaPublisher, RecordRefused, SpoolFullError, ensure_topic
from ingest.spool import REFUSED_DIR, SUFFIX, Spool, decode_records, encode_record


async def test_dead_broker_spools_then_a_restarted_ingress_drains_in_order(tmp_path, kafka_bootstrap, unique_topic):
    topic = f"{unique_topic}spool"
    dead = KafkaPublisher(f"127.0.0.1:{free_port()}", topic, ack_timeout=1, spool=Spool(tmp_path, 1 << 20))
    await dead.start()
    try:
        await dead.publish(b"k0", b"v0")  # waits for the ack timeout, then spools
        await asyncio.gather(*(dead.publish(k, v) for k, v in [(b"k1", b"v1"), (b"k2", b"v2")]))
        assert dead.spool_stats()["records"] == 3
    finally:
        await dead.stop()

    await ensure_topic(kafka_bootstrap, topic, 1)
    live = KafkaPublisher(kafka_bootstrap, topic, ack_timeout=5, spool=Spool(tmp_path, 1 << 20))
    await live.start()
    try:
        assert live.spool.pending == 3
        await live.publish(b"k3", b"v3")  # behind the spooled ones
        for _ in range(100):
            if live.spool.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert live.spool.pending == 0
        assert not list(tmp_path.glob(f"*{SUFFIX}"))
    finally:
        await live.stop()

    assert await _records(kafka_bootstrap, topic, 4) == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")]


async def test_full_spool_with_dead_broker_is_a_clear_failure(tmp_path):
    frame = len(encode_record(b"k", b"v"))
    publisher = KafkaPublisher(f"127.0.0.1:{free_port()}", "t", ack_timeout=0.5,
                               spool=Spool(tmp_path, frame + 1))
    await publisher.start()
    try:
        await publisher.publish(b"k", b"v")
        with pytest.raises(SpoolFullError) as info:
            await publisher.publish(b"k", b"v")
        assert "spool full" in info.value.public
    finally:
        await publisher.stop()


TOO_LARGE = b"x" * (5 * 1024 * 1024)  # over the producer's 4 MiB max_request_size: refused for good


async def test_a_record_the_broker_refuses_is_never_spooled(tmp_path, kafka_bootstrap, unique_topic):
    """Spooled, it would stop the drain for every record behind it; the caller answers 413 instead."""
    topic = await _created(kafka_bootstrap, f"{unique_topic}refused")
    publisher = KafkaPublisher(kafka_bootstrap, topic, ack_timeout=5, spool=Spool(tmp_path, 64 << 20))
    await publisher.start()
    try:
        with pytest.raises(RecordRefused) as info:
            await publisher.publish(b"big", TOO_LARGE)
        assert info.value.public == "event too large for the event store"
        assert publisher.spool.pending == 0
        await publisher.publish(b"k", b"v")
    finally:
        await publisher.stop()
    assert await _records(kafka_bootstrap, topic, 1) == [(b"k", b"v")]


async def test_a_spooled_record_the_broker_refuses_is_set_aside_and_the_drain_goes_on(tmp_path, kafka_bootstrap,
                                                                                      unique_topic):
    topic = await _created(kafka_bootstrap, f"{unique_topic}aside")
    spool = Spool(tmp_path, 64 << 20)  # as an earlier run (or an older version) left it
    assert spool.append_many([(b"k0", b"v0"), (b"big", TOO_LARGE), (b"k1", b"v1")]) == [None, None, None]
    spool.close()
    publisher = KafkaPublisher(kafka_bootstrap, topic, ack_timeout=5, spool=Spool(tmp_path, 64 << 20))
    await publisher.start()
    try:
        for _ in range(100):
            if publisher.spool.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert publisher.spool.pending == 0
    finally:
        await publisher.stop()
    assert await _records(kafka_bootstrap, topic, 2) == [(b"k0", b"v0"), (b"k1", b"v1")]
    [aside] = (tmp_path / REFUSED_DIR).iterdir()
    assert list(decode_records(aside.read_bytes())) == [(b"big", TOO_LARGE)]
    assert not list(tmp_path.glob(f"*{SUFFIX}"))


async def _created(bootstrap: str, topic: str) -> str:
    await ensure_topic(bootstrap, topic, 1)
    return topic


async def _records(bootstrap: str, topic: str, expect: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes]] = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            got += [(m.key, m.value) for msgs in batch.values() for m in msgs]
            if len(got) >= expect:
                break
        return got
    finally:
        await consumer.stop()
