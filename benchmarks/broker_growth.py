"""The test broker's CPU per record as it fills: tansu (memory storage) with plain aiokafka, no canvas-stream code.

    .venv/bin/python -m benchmarks.broker_growth [--minutes 2.5] [--rate 500] [--waits 100,1500]

For each fetch wait, a fresh tansu; 1.9 KB records produced at ``--rate`` to 6 partitions and read by
one consumer; every 30 s the broker's CPU per record produced in that interval and its RSS. Explains
the soak's latency in docs/performance.md (tansu's cost grows with what it holds).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from canvas_stream.embedded.broker import EmbeddedKafka
from ingest.publish import ensure_topic

RECORD = b"x" * 1900
STEP_SECONDS = 30


async def measure(bootstrap: str, broker_pid: int, wait_ms: int, minutes: float, rate: float) -> None:
    topic = f"growth-{wait_ms}-{int(time.time())}"
    await ensure_topic(bootstrap, topic, 6)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", fetch_max_wait_ms=wait_ms,
                                auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    broker = psutil.Process(broker_pid)
    received = 0

    async def consume() -> None:
        nonlocal received
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            received += sum(len(records) for records in batch.values())

    reader = asyncio.create_task(consume())
    started = time.perf_counter()
    sent = 0
    last_t, last_cpu, last_sent = started, sum(broker.cpu_times()[:2]), 0
    try:
        while time.perf_counter() - started < minutes * 60:
            due = int((time.perf_counter() - started) * rate)
            while sent < due:
                await producer.send(topic, RECORD, key=str(sent % 997).encode())
                sent += 1
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            if now - last_t >= STEP_SECONDS:
                cpu = sum(broker.cpu_times()[:2])
                per_record = (cpu - last_cpu) / max(sent - last_sent, 1) * 1e6
                print(f"fetch wait {wait_ms:5d} ms  t={now - started:4.0f}s  sent {sent:7d}  read {received:7d}  "
                      f"broker CPU/record {per_record:6.0f} us  RSS {broker.memory_info().rss / 2**20:5.0f} MB",
                      flush=True)
                last_t, last_cpu, last_sent = now, cpu, sent
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()


async def main(minutes: float, rate: float, waits: list[int]) -> None:
    for wait_ms in waits:
        with EmbeddedKafka() as kafka:
            assert kafka.pid is not None
            await measure(kafka.bootstrap_servers, kafka.pid, wait_ms, minutes, rate)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--waits", default="100,1500", help="fetch waits to compare, ms")
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.rate, [int(w) for w in args.waits.split(",")]))
