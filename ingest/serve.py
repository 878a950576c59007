"""Run the ingress: the public app (ingest.app) and the admin app (ingest.admin) in one process.

A module of its own so that the admin app can import the public app's handlers without a cycle.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from canvas_stream.loop import install_fast_loop, tune_gc
from canvas_stream.settings import Settings
from ingest.admin import serve_admin
from ingest.answers import AnswerLedger
from ingest.app import create_app
from ingest.hello_world import HelloWorldWatch
from ingest.lti_routes import NoticeLedger
from ingest.nonces import PostgresNonces

log = structlog.get_logger(__name__)


def run_ingress(settings: Settings, notice_ledger: NoticeLedger | None = None) -> None:
    """Serve the public port and the admin port until SIGINT/SIGTERM."""
    install_fast_loop()
    database = settings.require_database_url() if settings.database_url is not None else None
    answers = AnswerLedger(database) if database is not None else None
    lti = database is not None and bool(settings.lti_client_id)
    nonces = PostgresNonces(database) if lti and database is not None else None
    hello_world = (HelloWorldWatch(database, settings.lti_hello_world_wait_seconds)
                   if lti and database is not None else None)
    app = create_app(settings, notice_ledger=notice_ledger, answers=answers, nonce_store=nonces,
                     hello_world=hello_world)
    app.cleanup_ctx.insert(0, serve_admin(settings))  # first: a taken admin port fails before anything starts
    tune_gc()
    routes = "POST /live-events, POST /lti/notices" if settings.live_events_enabled else "POST /lti/notices"
    log.info("canvas-stream ingress listening", url=f"http://{settings.host}:{settings.port}", routes=routes,
             admin=f"http://{settings.host}:{settings.admin_port}",
             canvas_budget="canvas_stream.ingress_answers" if answers is not None else "off (DATABASE_URL not set)")
    # keepalive_timeout is armed when a connection opens and not reset by partial data, so it also
    # closes a client that never finishes its request headers (slowloris); the body has its own deadline.
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                keepalive_timeout=settings.http_read_timeout_seconds)
