"""Moving a previous release's warehouse out of schema ``canvas`` into the configured schema.

Releases before migration 0007 kept every table, view, function and Alembic's version table in
schema ``canvas``, the schema Canvas Data 2's client uses for its own tables of the same names.
``migrations/env.py`` calls :func:`relocate_previous_release` before Alembic reads its version table,
so Alembic finds it where the previous release left it, and every migration after 0004 (whatever
its order) finds the tables in the configured schema.

When the configured schema does not exist yet, schema ``canvas`` is renamed (grants and default
privileges on it come along); when it exists (a DBA created it), every relation and function is
moved into it one by one, and ``canvas`` is dropped if nothing else is left in it. Either way the
one function whose body names another by schema (``merge_versions`` calls ``newer``) is re-created,
since a function body is text that does not follow the move. All of it runs in the migration's
transaction: a failure leaves the warehouse where it was.
"""

from __future__ import annotations

from collections.abc import Collection

import structlog
from sqlalchemy import text
from sqlalchemy.engine import Connection

from migrations import functions
from processors.warehouse.schema import LEGACY_SCHEMA, SCHEMA

log = structlog.get_logger(__name__)

VERSION_TABLE = "alembic_version"

_KEYWORDS = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
             "S": "SEQUENCE"}


def _has_table(connection: Connection, schema: str, table: str) -> bool:
    return connection.execute(text("SELECT to_regclass(:name) IS NOT NULL"),
                              {"name": f"{schema}.{table}"}).scalar_one()


def _has_schema(connection: Connection, schema: str) -> bool:
    return connection.execute(text("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :s)"),
                              {"s": schema}).scalar_one()


def _move_objects(connection: Connection, source: str, target: str) -> None:
    """Every relation (indexes and owned sequences follow their table) and function, one by one."""
    relations = connection.execute(text("""
        SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :s AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND NOT c.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype IN ('a', 'i'))
        ORDER BY c.relkind, c.relname"""), {"s": source}).all()
    partitions = connection.execute(text("""
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :s AND c.relispartition ORDER BY c.relname"""), {"s": source}).scalars().all()
    for name, kind in relations:
        connection.exec_driver_sql(f'ALTER {_KEYWORDS[kind]} {source}."{name}" SET SCHEMA {target}')
    for name in partitions:
        connection.exec_driver_sql(f'ALTER TABLE {source}."{name}" SET SCHEMA {target}')
    routines = connection.execute(text("""
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s ORDER BY 1, 2"""),
        {"s": source}).all()
    for name, arguments in routines:
        connection.exec_driver_sql(f'ALTER ROUTINE {source}."{name}"({arguments}) SET SCHEMA {target}')
    left = connection.execute(text("""
        SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s)
             + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s)
             + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = :s)
        """), {"s": source}).scalar_one()
    if left == 0:
        connection.exec_driver_sql(f"DROP SCHEMA {source}")
    else:
        log.warning("objects left in the previous schema", schema=source, objects=left)


def relocate_previous_release(connection: Connection, revisions: Collection[str],
                              source: str = LEGACY_SCHEMA, target: str = SCHEMA) -> bool:
    """Move a previous release's warehouse from ``source`` into ``target``; True when it did.

    Only a warehouse that is ours is moved: ``source`` holds an Alembic version table naming one of
    ``revisions`` (this project's) and the writer's ``merge_versions`` function, and ``target`` holds
    no version table (it is not already a warehouse).
    """
    if source == target or not _has_table(connection, source, VERSION_TABLE):
        return False
    if _has_table(connection, target, VERSION_TABLE):
        log.warning("both schemas hold an Alembic version table; the previous one is left alone",
                    previous=source, schema=target)
        return False
    stored = connection.execute(text(f"SELECT version_num FROM {source}.{VERSION_TABLE}")).scalars().all()
    ours = connection.execute(text("SELECT to_regprocedure(:f) IS NOT NULL"),
                              {"f": f"{source}.merge_versions(jsonb,jsonb)"}).scalar_one()
    if not stored or any(version not in revisions for version in stored) or not ours:
        log.warning("schema holds an Alembic version table that is not canvas-stream's; left alone",
                    schema=source, versions=stored)
        return False
    if _has_schema(connection, target):
        _move_objects(connection, source, target)
        how = "objects moved"
    else:
        connection.exec_driver_sql(f"ALTER SCHEMA {source} RENAME TO {target}")
        how = "schema renamed"
    if connection.execute(text("SELECT to_regprocedure(:f) IS NOT NULL"),
                          {"f": f"{target}.merge_versions(jsonb,jsonb)"}).scalar_one():
        connection.exec_driver_sql(functions.merge_versions(target))
    log.info("moved the previous release's warehouse into its own schema", previous=source, schema=target,
             how=how, revision=",".join(stored))
    return True
