"""The ingress spool: durable appends, bounded size, corruption tolerance, restart, and draining to Kafka."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiokafka import AIOKafkaConsumer
from structlog.testing import capture_logs

from canvas_stream.services import free_port
from ingest.publish import KafkaPublisher, SpoolFullError, ensure_topic
from ingest.spool import HEADER_SIZE, SUFFIX, Spool, SpoolFull, decode_records, encode_record


def records(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f'{{"n":{i}}}'.encode()) for i in range(start, start + n)]


def read_all(spool: Spool) -> list[tuple[bytes, bytes]]:
    spool.seal()
    return [r for segment in spool.sealed() for r in spool.read(segment)]


def test_appends_are_read_back_in_order_and_survive_a_restart(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    for key, value in records(5):
        spool.append(key, value)
    assert spool.pending == 5
    spool.close()  # the process goes away; nothing else is flushed later

    again = Spool(tmp_path, 1 << 20)
    assert again.pending == 5
    again.append(b"k5", b'{"n":5}')  # a new segment after the old ones
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 2
    assert read_all(again) == records(6)


def test_segments_rotate_and_are_removed_only_when_acknowledged(tmp_path):
    spool = Spool(tmp_path, 1 << 20, segment_bytes=200)
    for key, value in records(20):
        spool.append(key, value)
    segments = spool.sealed()
    assert len(segments) >= 2
    first = segments[0]
    count = len(spool.read(first))
    spool.acknowledge(first, 1)
    assert spool.pending == 19
    spool.remove(first)
    assert not first.path.exists()
    assert spool.pending == 20 - count
    assert read_all(spool) == records(20)[count:]


def test_a_full_spool_refuses_with_spoolfull(tmp_path):
    frame = len(encode_record(b"k0", b'{"n":0}'))
    spool = Spool(tmp_path, frame * 3 + 1)
    results = spool.append_many(records(5))
    assert [r is None for r in results] == [True, True, True, False, False]
    assert all(isinstance(r, SpoolFull) for r in results[3:])
    with pytest.raises(SpoolFull):
        spool.append(b"k", b"v")
    assert spool.pending == 3


def test_torn_tail_is_skipped_with_a_log_line(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    for key, value in records(3):
        spool.append(key, value)
    spool.close()
    (path,) = tmp_path.glob(f"*{SUFFIX}")
    with path.open("r+b") as fh:  # a crash in the middle of the third append
        fh.truncate(path.stat().st_size - 3)
    with capture_logs() as logs:
        again = Spool(tmp_path, 1 << 20)
        assert again.pending == 2
        assert read_all(again) == records(2)
    assert any(e["event"].startswith("spool: corrupt or torn record") for e in logs)


@pytest.mark.parametrize("where", ["body", "header", "magic"])
def test_a_corrupt_record_in_the_middle_is_skipped_and_the_rest_kept(tmp_path, where):
    spool = Spool(tmp_path, 1 << 20)
    for key, value in records(3):
        spool.append(key, value)
    spool.close()
    (path,) = tmp_path.glob(f"*{SUFFIX}")
    frame = len(encode_record(b"k0", b'{"n":0}'))
    offset = {"body": frame + HEADER_SIZE + 5, "header": frame + 5, "magic": frame}[where]
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with capture_logs() as logs:
        assert list(decode_records(bytes(data))) == [records(3)[0], records(3)[2]]
    assert [e["reason"] for e in logs if "reason" in e]
    assert Spool(tmp_path, 1 << 20).pending == 2


def test_garbage_files_never_crash(tmp_path):
    (tmp_path / f"{1:020d}{SUFFIX}").write_bytes(os.urandom(3000))
    (tmp_path / f"{2:020d}{SUFFIX}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a segment")
    spool = Spool(tmp_path, 1 << 20)
    assert spool.pending == 0
    spool.append(b"k", b"v")
    assert read_all(spool) == [(b"k", b"v")]


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

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes]] = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            got += [(m.key, m.value) for msgs in batch.values() for m in msgs]
            if len(got) >= 4:
                break
    finally:
        await consumer.stop()
    assert got == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")]


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
