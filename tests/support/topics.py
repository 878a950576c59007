"""Kafka topics for the tests: a fresh one, created; what was published to one; publishing to one; a
consumer group's committed offsets."""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ingest.publish import ensure_topic


async def created_topic(bootstrap: str, name: str, partitions: int = 3) -> str:
    """``name``, created on the broker with ``partitions`` partitions (fine if it exists)."""
    await ensure_topic(bootstrap, name, partitions)
    return name


async def published(bootstrap: str, topic: str, expect: int, timeout: float = 10.0) -> list[ConsumerRecord]:
    """Every message on ``topic`` from its start, once ``expect`` have come or ``timeout`` passed.

    With ``expect == 0`` it listens 1.5 s longer, so that "nothing was published" is not just "too soon".
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        messages: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(messages) < expect:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                messages.extend(records)
        if expect == 0:
            for records in (await consumer.getmany(timeout_ms=1500)).values():
                messages.extend(records)
        return messages
    finally:
        await consumer.stop()


async def publish(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes = b"k") -> None:
    """Send each value with acks=all, in order, under one key (one partition)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def committed(bootstrap: str, topic: str, group: str, partitions: int = 1) -> int:
    """The offsets ``group`` committed on partitions ``0 .. partitions - 1`` of ``topic``, summed (0 when none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([(await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)])
    finally:
        await consumer.stop()
