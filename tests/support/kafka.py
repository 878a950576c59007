"""Small Kafka helpers for tests that drive a real worker: publish records, read a group's offset."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def publish(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes = b"k") -> None:
    """Send each value with acks=all, in order, under one key (one partition)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def committed(bootstrap: str, topic: str, group: str) -> int:
    """The offset ``group`` committed on partition 0 of ``topic`` (0 when none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return (await consumer.committed(TopicPartition(topic, 0))) or 0
    finally:
        await consumer.stop()
