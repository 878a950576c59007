"""The SQLAlchemy tables of the warehouse, built from ``schema``: used by the writer, Alembic and the
data dictionary. They live in ``schema.SCHEMA`` (the ``WAREHOUSE_SCHEMA`` setting).

This is the only place a column kind becomes an SQL type. ``info["fed_by"]`` (for the data
dictionary) comes from the schema for the tables it names a feeder for, else from the event map.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, MetaData, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.types import TypeEngine

from processors.normalize.event_map import fed_by as event_map_fed_by
from processors.warehouse import schema
from processors.warehouse.schema import SCHEMA, TABLE_SPECS, Col, Kind, TableSpec

__all__ = ["SCHEMA", "TABLES", "VERSION_COLUMNS", "metadata", "warehouse_tables"]

metadata = MetaData(schema=SCHEMA)
VERSION_COLUMNS = tuple(c.name for c in schema.VERSION_COLUMNS)


# The one mapping of column kind -> SQL type.
_SQL_TYPES: dict[Kind, Callable[[], TypeEngine]] = {
    Kind.ID: BigInteger,
    Kind.INT: BigInteger,
    Kind.FLOAT: Float,
    Kind.BOOL: Boolean,
    Kind.TIME: lambda: TIMESTAMP(timezone=True),
    Kind.TEXT: Text,
    Kind.JSON: lambda: JSONB(none_as_null=True),  # an absent value is SQL NULL, not JSON null
}


def _column(col: Col, *, key: bool) -> Column:
    options: dict = {"comment": col.comment} if col.comment else {}
    if key:
        options.update(primary_key=True, autoincrement=False)
    elif not col.nullable:
        options["nullable"] = False
    if col.server_default is not None:
        options["server_default"] = text(col.server_default)
    return Column(col.name, _SQL_TYPES[col.kind](), **options)


def _build(spec: TableSpec, fed_by: list[str]) -> Table:
    keys = {c.name for c in spec.keys}
    return Table(
        spec.name,
        metadata,
        *(_column(c, key=c.name in keys) for c in spec.all_columns()),
        *(Index(index.name, *index.columns,
                **({"postgresql_where": text(index.where)} if index.where else {})) for index in spec.indexes),
        comment=spec.comment,
        info={"fed_by": fed_by},
    )


_FED_BY = event_map_fed_by()
TABLES: dict[str, Table] = {
    name: _build(spec, list(spec.fed_by) if spec.fed_by is not None else _FED_BY.get(name, []))
    for name, spec in TABLE_SPECS.items()
}

# Names for the tables code refers to directly; any other: TABLES[name].
events = TABLES["events"]
quarantine = TABLES["quarantine"]
courses = TABLES["courses"]
users = TABLES["users"]
enrollments = TABLES["enrollments"]
assignments = TABLES["assignments"]
submissions = TABLES["submissions"]
grade_changes = TABLES["grade_changes"]
lti_notices = TABLES["lti_notices"]


def warehouse_tables() -> list[Table]:
    """The tables the writer upserts row changes into (all but events and quarantine)."""
    return [t for t in metadata.sorted_tables if TABLE_SPECS[t.name].versioned]
