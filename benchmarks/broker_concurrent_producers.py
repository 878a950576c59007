"""Does the test broker keep every record it acknowledged when two producers write at once?

    .venv/bin/python -m benchmarks.broker_concurrent_producers [--rounds 400] [--producers 2]

tansu (memory storage) with plain aiokafka, no canvas-stream code: each round creates a topic of 4
partitions, ``--producers`` producers (acks=all) send 60 records between them, 8 at a time each,
awaiting every acknowledgement; then every partition is read from its start. A round is bad when
an acknowledged record is not there. Measured 2026-12-03: 2 producers, 5 bad rounds of 400 and 7
of 300 (1-3 records each; the partitions' read counts disagree with their end offsets); 1 producer,
0 of 400. This is why the fault tests never let two ingresses publish at the same moment
(tests/faults/test_broker_outage.py); production brokers (apache/kafka) have no such defect.
"""

from __future__ import annotations

import argparse
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from canvas_stream.embedded.broker import EmbeddedKafka
from canvas_stream.embedded.process import free_port
from ingest.publish import ensure_topic

PARTITIONS = 4
RECORDS = 60
IN_FLIGHT = 8


async def one_round(bootstrap: str, topic: str, producers: int) -> tuple[set[bytes], dict[int, tuple[int, int]]]:
    """(acknowledged records not found, {partition: (records read, end offset)})."""
    await ensure_topic(bootstrap, topic, PARTITIONS)
    clients = [AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1) for _ in range(producers)]
    for client in clients:
        await client.start()
    acknowledged: set[bytes] = set()

    async def send(client: AIOKafkaProducer, numbers: list[int]) -> None:
        for n in numbers:
            value = str(n).encode()
            await (await client.send(topic, value, key=str(n % 7).encode()))
            acknowledged.add(value)

    try:
        mine = [list(range(RECORDS))[k::producers] for k in range(producers)]
        await asyncio.gather(*(send(client, numbers[j::IN_FLIGHT])
                               for client, numbers in zip(clients, mine, strict=True) for j in range(IN_FLIGHT)))
    finally:
        for client in clients:
            await client.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        read: dict[TopicPartition, list[bytes]] = {tp: [] for tp in partitions}
        for _ in range(40):
            for tp, messages in (await consumer.getmany(timeout_ms=300)).items():
                read[tp].extend(m.value for m in messages)
            if sum(len(v) for v in read.values()) >= sum(ends.values()):
                break
    finally:
        await consumer.stop()
    found = {value for values in read.values() for value in values}
    return acknowledged - found, {tp.partition: (len(read[tp]), ends[tp]) for tp in partitions}


async def main(rounds: int, producers: int) -> None:
    broker = EmbeddedKafka(port=free_port())
    await asyncio.to_thread(broker.start)
    try:
        bad = 0
        for n in range(rounds):
            lost, counts = await one_round(broker.bootstrap_servers, f"producers-{n}", producers)
            if lost:
                bad += 1
                print(f"round {n}: lost {len(lost)} acknowledged records; read/end per partition {counts}", flush=True)
        print(f"{producers} producer(s): {bad} bad rounds of {rounds}")
    finally:
        await asyncio.to_thread(broker.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--producers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.producers))
