"""What every ingress route shares: the application keys and the error answer.

Its own module so the route modules (:mod:`ingest.app`, :mod:`ingest.lti_routes`) import it and
never each other's.
"""

from __future__ import annotations

from aiohttp import web

from canvas_stream.settings import Settings
from ingest.publish import KafkaPublisher

__all__ = ["PUBLISHER_KEY", "SETTINGS_KEY", "error"]

SETTINGS_KEY = web.AppKey("settings", Settings)
PUBLISHER_KEY = web.AppKey("publisher", KafkaPublisher)


def error(status: int, message: str) -> web.Response:
    """A short JSON error: never a stack trace, a token or a secret."""
    return web.json_response({"error": message}, status=status)
