"""answers_middleware with a ResponseDeadline: the deadline's 503 inside the one middleware, timed and counted."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from ingest.answers import answers_middleware
from ingest.deadline import DEADLINE_MESSAGE, ResponseDeadline


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_hanging_handler_is_answered_503_and_timed_with_that_code() -> None:
    async def hangs(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def answers(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[answers_middleware(None, ResponseDeadline(0.2, routes={"/live-events"}))])
    app.router.add_post("/live-events", hangs)
    app.router.add_get("/healthz", answers)
    timed_503 = "canvas_stream_ingress_request_duration_seconds_count"
    before = (_sample(timed_503, route="/live-events", code="503"),
              _sample("canvas_stream_ingress_deadline_exceeded_total", route="/live-events"),
              _sample(timed_503, route="/healthz", code="200"))
    async with TestClient(TestServer(app)) as client:
        hung = await client.post("/live-events", data=b"{}")
        assert (hung.status, await hung.json()) == (503, {"error": DEADLINE_MESSAGE})
        fine = await client.get("/healthz")  # not a guarded route: answered, timed, no deadline
        assert (fine.status, await fine.text()) == (200, "ok")
    after = (_sample(timed_503, route="/live-events", code="503"),
             _sample("canvas_stream_ingress_deadline_exceeded_total", route="/live-events"),
             _sample(timed_503, route="/healthz", code="200"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
