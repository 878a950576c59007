"""The ingress's admin port (``ADMIN_PORT``, bound to ``HOST``): ``/status``, ``/metrics``, and the
same ``/healthz`` and ``/readyz`` as the public port.

Why a second port: the public port faces Canvas (and the internet, through the TLS proxy); the
status page and the metrics describe the deployment and are for operators and Prometheus only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from canvas_stream.settings import Settings
from ingest.answers import replica_name
from ingest.app import ANSWERS_KEY, LIVE_JWKS_KEY, PUBLISHER_KEY, SETTINGS_KEY, healthz, readyz
from ingest.lti_routes import LTI_STATE_KEY
from ingest.status_page import render_status
from ingest.status_sources import StatusSources

SOURCES_KEY = web.AppKey("status_sources", StatusSources)
REPLICA_KEY = web.AppKey("replica", str)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    snapshot = await request.app[SOURCES_KEY].snapshot(request.app[REPLICA_KEY])
    return web.Response(text=render_status(snapshot), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def create_admin_app(public: web.Application) -> web.Application:
    """The admin app, sharing the public app's publisher, key cache and answer ledger."""
    admin = web.Application()
    admin[SETTINGS_KEY] = settings = public[SETTINGS_KEY]
    admin[PUBLISHER_KEY] = publisher = public[PUBLISHER_KEY]
    admin[LIVE_JWKS_KEY] = public[LIVE_JWKS_KEY]
    if LTI_STATE_KEY in public:
        admin[LTI_STATE_KEY] = public[LTI_STATE_KEY]
    answers = public.get(ANSWERS_KEY)
    if answers is not None:
        admin[ANSWERS_KEY] = answers
    admin[REPLICA_KEY] = answers.replica if answers is not None else replica_name()
    admin[SOURCES_KEY] = StatusSources(settings, answers=answers, spool=publisher.spool_stats)
    admin.router.add_get("/status", status)
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)

    async def close(app: web.Application) -> None:
        await app[SOURCES_KEY].close()

    admin.on_cleanup.append(close)
    return admin


def serve_admin(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for the public app: serve the admin app on ADMIN_PORT while it runs."""

    async def admin_site(public: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(create_admin_app(public), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.admin_port).start()
            yield
        finally:
            await runner.cleanup()

    return admin_site
