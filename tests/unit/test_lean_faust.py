"""The worker's faust app asks the broker for records with the fetch wait it was configured with."""

from __future__ import annotations

import asyncio

import pytest

from canvas_stream.settings import Settings
from processors.app import create_app


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
