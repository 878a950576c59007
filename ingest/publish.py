"""Publishing verified records to Kafka: a 2xx is returned only after the broker acknowledged."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = structlog.get_logger(__name__)


class PublishFailed(Exception):
    """The broker did not acknowledge in time; the caller answers 503 (Canvas retries)."""


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


class KafkaPublisher:
    """One idempotent-safe producer (acks=all), started lazily so the ingress survives a broker outage."""

    def __init__(self, bootstrap: str, topic: str, *, ack_timeout: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.ack_timeout = ack_timeout
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _ensure_started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    linger_ms=1,
                    max_request_size=4 * 1024 * 1024,
                    request_timeout_ms=int(self.ack_timeout * 1000),
                    compression_type=None,
                )
                try:
                    await asyncio.wait_for(producer.start(), timeout=self.ack_timeout)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise PublishFailed(f"broker unavailable: {exc.__class__.__name__}") from exc
                self._producer = producer
        return self._producer

    async def start(self) -> None:
        try:
            await self._ensure_started()
        except PublishFailed as exc:
            log.warning("kafka not reachable yet; will retry on first publish", error=str(exc))

    async def publish(self, key: bytes, value: bytes) -> None:
        """Return once the broker acknowledged the write, else raise PublishFailed."""
        producer = await self._ensure_started()
        try:
            await asyncio.wait_for(producer.send_and_wait(self.topic, value, key=key), timeout=self.ack_timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise PublishFailed(f"broker did not acknowledge: {exc.__class__.__name__}") from exc

    async def ready(self) -> bool:
        """The broker answers a metadata request for our topic."""
        try:
            producer = await self._ensure_started()
            partitions = await asyncio.wait_for(producer.partitions_for(self.topic), timeout=self.ack_timeout)
        except (PublishFailed, KafkaError, OSError, TimeoutError):
            return False
        return bool(partitions)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
