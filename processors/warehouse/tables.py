"""Warehouse tables, defined once: used by the writer, by Alembic and by the data dictionary.

Every entity and fact table shares one contract with the writer: its key columns, the data
columns normalizers may set, ``last_event_at`` (the newest event that touched the row) and
``field_versions`` (column -> version of the event that set it), which makes upserts order-safe
per column.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

from processors.normalize import mapping

SCHEMA = "canvas"
metadata = MetaData(schema=SCHEMA)

TZ = TIMESTAMP(timezone=True)
VERSION_COLUMNS = ("last_event_at", "field_versions")


def entity_table(name: str, keys: list[Column], *columns: Column, comment: str, fed_by: list[str]) -> Table:
    """A current-state (or fact) table with the versioning columns the writer relies on."""
    return Table(
        name,
        metadata,
        *keys,
        *columns,
        Column("last_event_at", TZ, comment="Time of the newest event that changed this row."),
        Column(
            "field_versions",
            JSONB,
            nullable=False,
            server_default=text("'{}'::jsonb"),
            comment="Per column, the event time and id that set it (the order-safety guard).",
        ),
        comment=comment,
        info={"fed_by": fed_by},
    )


def id_column(comment: str = "Canvas global id.") -> Column:
    return Column("id", BigInteger, primary_key=True, autoincrement=False, comment=comment)


events = Table(
    "events",
    metadata,
    Column("event_id", Text, primary_key=True,
           comment="Caliper: the event id; Canvas format: sha256 of the canonical event."),
    Column("event_name", Text, nullable=False, comment="Canvas event name, e.g. grade_change, both formats."),
    Column("format", Text, nullable=False, comment="canvas, caliper or lti_notice."),
    Column("event_time", TZ, comment="When the event happened (metadata.event_time / eventTime)."),
    Column("received_at", TZ, nullable=False, comment="Earliest time the ingress received it."),
    Column("user_id", BigInteger, comment="Acting user (metadata.user_id / Caliper actor)."),
    Column("context_type", Text, comment="Course, Account, Group, ..."),
    Column("context_id", BigInteger, comment="Canvas id of the context."),
    Column("payload", JSONB, nullable=False, comment="The event as received."),
    Column("subscription", Text, comment="What delivered it first: the Data Services subscription id "
           "(signed HTTPS token's subscription.id) or the SQS queue URL; "
           "NULL when unknown (unsigned, LTI, before 0005)."),
    Column("root_account_uuid", Text, comment="Root account the event names (metadata.root_account_uuid / "
           "Caliper com.instructure.canvas extension of the event or its actor)."),
    Index("events_name_time_idx", "event_name", "event_time"),
    Index("events_context_idx", "context_id", "event_time"),
    comment="One row per distinct event; a Caliper envelope yields one row per data[] item.",
    info={"fed_by": ["every event"]},
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Text, primary_key=True, comment="sha256 of the raw message (idempotent)."),
    Column("received_at", TZ, nullable=False, server_default=text("now()")),
    Column("reason", Text, nullable=False, comment="Why it could not be normalized or stored."),
    Column("source", Text, comment="live_event, lti_notice or kafka."),
    Column("raw", Text, nullable=False, comment="The raw record or message, as received."),
    Column("retried_at", TZ, comment="When an operator last retried it."),
    Column("resolved", Boolean, nullable=False, server_default=text("false")),
    comment="Authentic deliveries that broke normalization or a constraint; nothing is dropped.",
    info={"fed_by": ["any event that fails"]},
)

_SQL_TYPES = {
    mapping.ID: BigInteger,
    mapping.INT: BigInteger,
    mapping.FLOAT: Float,
    mapping.BOOL: Boolean,
    mapping.TIME: lambda: TZ,
    mapping.TEXT: Text,
    mapping.JSON: lambda: JSONB(none_as_null=True),  # an absent value is SQL NULL, not JSON null
}


def _column(col: mapping.Col, *, key: bool = False) -> Column:
    kwargs: dict = {"comment": col.comment} if col.comment else {}
    if key:
        kwargs.update(primary_key=True, autoincrement=False)
    return Column(col.name, _SQL_TYPES[col.kind](), **kwargs)


def _build(spec: mapping.TableSpec, fed_by: list[str]) -> Table:
    return entity_table(
        spec.name,
        [_column(c, key=True) for c in spec.keys],
        *(_column(c) for c in spec.columns),
        comment=spec.comment,
        fed_by=fed_by,
    )


# Entity and fact tables, declared (as plain data) in processors.normalize.mapping so that the
# normalizers and the schema cannot drift apart; fed_by is derived from the event mapping.
_FED_BY = mapping.fed_by()
TABLES: dict[str, Table] = {name: _build(spec, _FED_BY[name]) for name, spec in mapping.TABLE_SPECS.items()}

courses = TABLES["courses"]
users = TABLES["users"]
enrollments = TABLES["enrollments"]
assignments = TABLES["assignments"]
submissions = TABLES["submissions"]
grade_changes = TABLES["grade_changes"]


def warehouse_tables() -> list[Table]:
    """The tables the writer upserts row changes into (all but events and quarantine)."""
    return [t for t in metadata.sorted_tables if "field_versions" in t.c]
