"""What every worker does besides consuming: keep monthly partitions ahead, and run scheduled retention.

Both are safe to run from every worker at once: creating months serializes on an advisory lock and
is idempotent; the scheduled retention (off unless ``RETENTION_INTERVAL_HOURS`` is set) runs in one
worker at a time and at most once per interval across all of them (``retention.run_scheduled``). A
failure is logged and retried at the next tick: maintenance never stops a worker from consuming.
"""

from __future__ import annotations

import time
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from canvas_stream.settings import SettingError, Settings
from processors.warehouse import partitions, retention

log = structlog.get_logger(__name__)

TICK_SECONDS = 600.0
ENSURE_EVERY_SECONDS = 3600.0


class Maintenance:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:  # a bad setting stops the worker at start, in one line (exit 2)
            self.policy = retention.Policy(settings.retention_months)
        except retention.PolicyError as exc:
            raise SettingError("RETENTION_MONTHS", str(exc)) from exc
        self._last_ensure: float | None = None

    async def tick(self) -> None:
        """Called at start and every TICK_SECONDS; on connections of its own, never the sink's."""
        engine = create_async_engine(self.settings.require_database_url(), poolclass=NullPool)
        try:
            if self._last_ensure is None or time.monotonic() - self._last_ensure >= ENSURE_EVERY_SECONDS:
                try:
                    await partitions.ensure_partitions(engine, ahead=self.settings.partitions_ahead_months)
                    self._last_ensure = time.monotonic()
                except Exception as exc:
                    log.warning("could not create partitions ahead; will retry", error=str(exc)[:300])
            hours = self.settings.retention_interval_hours
            if hours and self.policy.months:
                try:
                    report = await retention.run_scheduled(
                        engine, self.policy, timedelta(hours=hours),
                        lock_timeout_ms=self.settings.retention_lock_timeout_ms,
                        ahead=self.settings.partitions_ahead_months)
                    if report.skipped_run is None:
                        log.info("scheduled retention done", actions=len(report.actions))
                except Exception as exc:
                    log.warning("scheduled retention failed; will retry", error=str(exc)[:300])
        finally:
            await engine.dispose()
