"""Structured logs (structlog) for our code and the stdlib loggers of faust, aiokafka and aiohttp.

With ``LOG_FORMAT=json`` every line a process writes is one JSON object: exceptions become a
structured ``exception`` field (type, message, frames) instead of a multi-line traceback, Python
warnings and uncaught exceptions go through the same handler, and the faust worker is told not to
replace the root handler (``install`` is what the worker calls instead of faust's own setup).
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType

import structlog

from canvas_stream.settings import Settings, get_settings


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """One formatter for everything; ``json`` for production log shippers."""
    shared: list = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)  # warnings.warn(...) becomes a log record, not a raw stderr line
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """An exception that ends the process is logged like any other (a JSON line with the traceback)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("canvas_stream").critical("uncaught exception", exc_info=(kind, value, tb))


def configured_settings() -> Settings:
    """The settings in force, with logging set up as they say (what every command starts with)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings
