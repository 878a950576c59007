"""The ingress's notice ledger, answered by the warehouse: which LTI notice ids are stored already.

Implements ``ingest.lti_routes.NoticeLedger`` (structurally: nothing here imports the ingress),
and the CLI passes it to the ingress when DATABASE_URL is set, so the ingress never imports a table.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from canvas_stream.lazy_engine import LazyEngine
from processors.warehouse import tables

__all__ = ["WarehouseNoticeLedger"]

LTI_NOTICES = tables.metadata.tables[f"{tables.SCHEMA}.lti_notices"]


class WarehouseNoticeLedger:
    """Looks notice ids up in ``canvas_stream.lti_notices`` over a one-connection pool."""

    def __init__(self, database_url: str) -> None:
        self._db = LazyEngine(database_url, pool_size=1, max_overflow=2, pool_pre_ping=False)

    async def known(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored; raises on any database error (the caller backs off)."""
        stmt = select(LTI_NOTICES.c.notice_id).where(LTI_NOTICES.c.notice_id.in_(list(ids)))
        async with self._db.engine.connect() as conn:
            return set((await conn.execute(stmt)).scalars())

    async def close(self) -> None:
        await self._db.dispose()
