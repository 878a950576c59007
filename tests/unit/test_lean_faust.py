"""The worker's faust app asks the broker for records with the fetch wait it was configured with."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import Message

from canvas_stream.settings import Settings
from processors.app import create_app
from processors.lean_faust import LeanApp, LeanTopic


@pytest.mark.parametrize("wait_ms", [25, 100, 1500])
def test_worker_consumer_uses_the_configured_fetch_wait(wait_ms: int) -> None:
    """faust fixes fetch_max_wait_ms at 1,500; against tansu that held each record ~0.6 s (e2e p50)."""

    async def build() -> int:
        settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url="postgresql://x@127.0.0.1:1/x",
                            worker_fetch_max_wait_ms=wait_ms)
        app = create_app(settings)
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        return consumer._fetch_max_wait_ms

    assert asyncio.run(build()) == wait_ms


def test_the_default_fetch_wait_is_short() -> None:
    assert Settings().worker_fetch_max_wait_ms <= 200


def _message(key: bytes | None, value: bytes | None) -> Message:
    return Message(topic="t", partition=0, offset=7, timestamp=0.0, timestamp_type=0, headers=[("h", b"1")],
                   key=key, value=value, checksum=None)


@pytest.mark.parametrize(("key", "value"), [(b"course:1", b'{"v":1}'), (None, b"x"), (b"k", None)])
def test_lean_topic_makes_the_event_faust_makes(key: bytes | None, value: bytes | None) -> None:
    """The worker's topic (raw keys and values) skips faust's serializers, with the same event."""

    async def decode() -> tuple[tuple, tuple, bool]:
        app = LeanApp("lean-topic-test", broker="kafka://127.0.0.1:1", key_serializer="raw", value_serializer="raw",
                      Topic=LeanTopic)
        lean, plain = app.topic("t"), faust.Topic(app, topics=["t"])
        message = _message(key, value)
        ours, faust_s = await lean.decode(message, propagate=True), await plain.decode(message, propagate=True)
        shape = lambda e: (type(e), e.key, e.value, dict(e.headers), e.message is message)  # noqa: E731
        return shape(ours), shape(faust_s), lean.decode.__qualname__ != plain.decode.__qualname__

    ours, faust_s, replaced = asyncio.run(decode())
    assert ours == faust_s
    assert replaced


def test_lean_topic_keeps_faust_decoder_for_other_serializers() -> None:
    async def decode() -> object:
        app = LeanApp("lean-topic-json", broker="kafka://127.0.0.1:1", value_serializer="json", Topic=LeanTopic)
        topic = app.topic("t")
        return (await topic.decode(_message(b"k", b'{"a": 1}'), propagate=True)).value

    assert asyncio.run(decode()) == {"a": 1}
