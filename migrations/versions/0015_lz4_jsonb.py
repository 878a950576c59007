"""jsonb values compressed with lz4 instead of pglz, where the server has lz4.

A value PostgreSQL stores out of line (a row over ~2 kB) is compressed first: ``events.payload``
(27% of the benchmark pool's payloads are over 2 kB) and the ``field_versions`` of wide fact rows
(a version per column: ~3 kB for ``asset_accesses``). With the default, pglz, compressing was 14%
of the worker's PostgreSQL CPU in a profile (``perf``); lz4 compresses faster at about the same
ratio (``benchmarks/pg_write.py``: the ``events`` insert 40 -> 36 us of backend CPU per event).
The stored values read back the same; rows written before keep pglz until rewritten (both are read).

Every jsonb column of the warehouse's tables and of their partitions is set (the setting on a
partitioned table does not reach its existing partitions; a new partition copies it: ``INCLUDING
COMPRESSION``). Only a catalog change: no table is rewritten. But each ``ALTER`` takes an ACCESS
EXCLUSIVE lock on its table (PostgreSQL 15), held until the migration commits: it waits for every open
transaction on those tables (an analyst's long query too) and, while it waits, the workers' writes
queue behind it. A server built without lz4 (``--without-lz4``; PostgreSQL before 14 has no choice)
is left as it is. A dump of the warehouse restores only on a server with lz4, unless
``pg_dump --no-toast-compression``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from processors.warehouse.schema import SCHEMA

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# jsonb columns of the schema's tables, partitions included: ALTER TABLE .. SET COMPRESSION on a
# partitioned table does not recurse (PostgreSQL 15, 16), though a partition made later copies it
JSONB_COLUMNS = """
    SELECT c.relname, a.attname FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
      AND a.atttypid = CAST('jsonb' AS regtype) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY c.relname, a.attnum"""


def server_has_lz4(bind: sa.Connection) -> bool:
    return bool(bind.execute(sa.text(
        "SELECT coalesce('lz4' = ANY(enumvals), false) FROM pg_settings WHERE name = 'default_toast_compression'"
    )).scalar())


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if not server_has_lz4(bind):
        return
    quote = bind.dialect.identifier_preparer.quote
    for table, column in bind.execute(sa.text(JSONB_COLUMNS), {"schema": SCHEMA}).all():
        op.execute(f"ALTER TABLE {quote(SCHEMA)}.{quote(table)} ALTER COLUMN {quote(column)} "
                   f"SET COMPRESSION {method}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("default")
