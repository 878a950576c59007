"""Rebuilding a table in place under the same name: what has to be read before and put back after.

Used by migration 0014 (history tables become partitioned). A table cannot be turned into a
partitioned table by ``ALTER``: it is renamed aside, recreated, refilled and dropped. What depends on
it must survive that: the views over it (the analyst views, dbt's staging views, in any schema,
views over views), with their comments, owners and grants; and the table's own comment, indexes,
owner and grants. Everything runs in the migration's transaction: a failure leaves the warehouse as
it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

PRIVILEGES = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "D": "TRUNCATE", "x": "REFERENCES",
              "t": "TRIGGER", "m": "MAINTAIN"}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str, schema: str) -> str:
    return f"{quote(schema)}.{quote(name)}"


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def rows(bind: Connection, sql: str, **params) -> list:
    return list(bind.execute(sa.text(sql), params))


def ddl(bind: Connection, sql: str) -> None:
    """A statement without parameters, sent as is (view definitions may hold ':' and '%')."""
    bind.exec_driver_sql(sql)


def relkind(bind: Connection, schema: str, table: str) -> str | None:
    """'r' for a plain table, 'p' for a partitioned one, None when it does not exist."""
    found = rows(bind, "SELECT CAST(c.relkind AS text) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = :s AND c.relname = :t", s=schema, t=table)
    return found[0][0] if found else None


def grant_statements(acl: Sequence[str], target: str, owner: str) -> list[str]:
    """GRANTs that rebuild an ``aclitem[]`` (as text) on ``target``, the owner's own rights left out."""
    out = []
    for item in acl:
        grantee, _, rest = item.partition("=")
        rights = rest.split("/", 1)[0]
        grantee = grantee.strip('"') or "PUBLIC"
        privileges = [PRIVILEGES[c] for c in rights if c in PRIVILEGES]
        if grantee != owner and privileges:
            who = "PUBLIC" if grantee == "PUBLIC" else quote(grantee)
            out.append(f"GRANT {', '.join(privileges)} ON {target} TO {who}")
    return out


def _restore_access(bind: Connection, kind: str, target: str, owner: str, acl: Sequence[str]) -> None:
    if owner != rows(bind, "SELECT current_user")[0][0]:
        ddl(bind, f"ALTER {kind} {target} OWNER TO {quote(owner)}")
    for grant in grant_statements(acl, target, owner):
        ddl(bind, grant)


# --- views that depend on the tables -----------------------------------------------------------

@dataclass
class View:
    schema: str
    name: str
    kind: str  # 'v' or 'm'
    sql: str
    comment: str | None
    owner: str
    acl: list[str]
    indexes: list[str] = field(default_factory=list)

    @property
    def keyword(self) -> str:
        return "MATERIALIZED VIEW" if self.kind == "m" else "VIEW"

    @property
    def target(self) -> str:
        return qualified(self.name, self.schema)


def dependent_views(bind: Connection, schema: str, tables: Sequence[str]) -> list[View]:
    """Every view or materialized view depending (transitively) on ``tables``, each after those it uses."""
    frontier = [r[0] for r in rows(bind, "SELECT CAST(CAST(t AS regclass) AS oid) "
                                         "FROM unnest(CAST(:names AS text[])) t",
                                   names=[qualified(t, schema) for t in tables])]
    depends: dict[int, set[int]] = {}
    while frontier:
        found = rows(bind, """
            SELECT DISTINCT r.ev_class, d.refobjid FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = ANY(:oids) AND r.ev_class <> d.refobjid""", oids=frontier)
        frontier = []
        for view, parent in found:
            if view not in depends:
                frontier.append(view)
            depends.setdefault(view, set()).add(parent)
    views: dict[int, View] = {}
    for oid in depends:
        row = rows(bind, """
            SELECT n.nspname, c.relname, CAST(c.relkind AS text), pg_get_viewdef(c.oid),
                   obj_description(c.oid, 'pg_class'), pg_get_userbyid(c.relowner), CAST(c.relacl AS text[])
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = :oid""", oid=oid)[0]
        indexes = [r[0] for r in rows(bind, "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = :oid",
                                      oid=oid)]
        views[oid] = View(row[0], row[1], row[2], row[3], row[4], row[5], list(row[6] or []), indexes)
    ordered: list[View] = []
    done: set[int] = set()
    while len(done) < len(views):
        for oid in views:
            if oid not in done and all(p in done or p not in views for p in depends[oid]):
                done.add(oid)
                ordered.append(views[oid])
    return ordered


def drop_views(bind: Connection, views: Sequence[View]) -> None:
    for view in reversed(views):
        ddl(bind, f"DROP {view.keyword} IF EXISTS {view.target}")


def create_views(bind: Connection, views: Sequence[View]) -> None:
    for view in views:
        ddl(bind, f"CREATE {view.keyword} {view.target} AS {view.sql}")
        for index in view.indexes:
            ddl(bind, index)
        if view.comment:
            ddl(bind, f"COMMENT ON {view.keyword} {view.target} IS {literal(view.comment)}")
        _restore_access(bind, view.keyword, view.target, view.owner, view.acl)


# --- one table ---------------------------------------------------------------------------------

@dataclass
class TableState:
    """What a rebuild must put back: columns in order, indexes, comment, owner and grants."""

    columns: list[str]
    indexes: list[tuple[str, str, bool, bool, str | None]]  # name, definition, unique, primary, constraint
    comment: str | None
    owner: str
    acl: list[str]


def table_state(bind: Connection, schema: str, table: str) -> TableState:
    oid = rows(bind, "SELECT CAST(CAST(:t AS regclass) AS oid)", t=qualified(table, schema))[0][0]
    columns = [r[0] for r in rows(bind, "SELECT attname FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 "
                                        "AND NOT attisdropped ORDER BY attnum", oid=oid)]
    indexes = [tuple(r) for r in rows(bind, """
        SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary, con.conname
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
        WHERE i.indrelid = :oid ORDER BY c.relname""", oid=oid)]
    info = rows(bind, "SELECT obj_description(:oid, 'pg_class'), pg_get_userbyid(relowner), CAST(relacl AS text[]) "
                      "FROM pg_class WHERE oid = :oid", oid=oid)[0]
    return TableState(columns, indexes, info[0], info[1], list(info[2] or []))  # type: ignore[arg-type]


def rename_aside(bind: Connection, schema: str, table: str, state: TableState, suffix: str) -> str:
    """Rename the table and its indexes and constraints out of the way; the table's new name."""
    aside = table + suffix
    ddl(bind, f"ALTER TABLE {qualified(table, schema)} RENAME TO {quote(aside)}")
    for index_name, _, _, _, constraint in state.indexes:
        if constraint:
            ddl(bind, f"ALTER TABLE {qualified(aside, schema)} RENAME CONSTRAINT {quote(constraint)} "
                      f"TO {quote(constraint + '__old')}")
        else:
            ddl(bind, f"ALTER INDEX {qualified(index_name, schema)} RENAME TO {quote(index_name + '__old')}")
    return aside


def restore(bind: Connection, schema: str, table: str, state: TableState) -> None:
    """Comment, secondary indexes (their definitions were read before the rename: they name the new
    table), owner and grants of the rebuilt table. The key is the caller's (it may change)."""
    target = qualified(table, schema)
    if state.comment:
        ddl(bind, f"COMMENT ON TABLE {target} IS {literal(state.comment)}")
    for _, definition, _, primary, _ in state.indexes:
        if not primary:
            ddl(bind, definition)
    _restore_access(bind, "TABLE", target, state.owner, state.acl)
