"""One happening, counted once; the metadata in columns; Caliper entities; what replay needs.

- ``events`` gains ``happening_id`` (the key of fact rows: a Canvas and a Caliper delivery of one
  happening share it), the metadata columns (``request_id``, ``real_user_id``, ``user_login``,
  ``user_sis_id``, ``root_account_id``) and ``arrival`` (how the delivery arrived, so a replay
  rebuilds the record the live path normalized).
- Fact tables are keyed by ``happening_id``; ``event_id`` becomes a data column (one delivery).
  ``asset_accesses`` and ``logins`` gain the acting user's columns, ``grade_changes`` the
  masquerading grader and the root account.
- ``caliper_entities``: entities a Caliper envelope describes beside its events.

Upgrades in place. Rows stored before this revision keep their meaning: each event is its own
happening (``happening_id = event_id``, and fact rows keep the event id they were keyed by), the
metadata columns are read from the stored payloads (the same places the normalizers read), and an
LTI notice's ``arrival`` is rebuilt from ``lti_notices`` (its JWT, key id and client id). Only the
normalizer can tell which stored Canvas and Caliper events are one happening, and which stored
Caliper "events" are entity describes: ``canvas-stream replay`` after upgrading merges those facts
and moves those entities (docs/operations.md).

The schema name is read from the one setting (``processors.warehouse.schema.SCHEMA``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from processors.warehouse.schema import SCHEMA

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FACT_TABLES = ("grade_changes", "course_grade_changes", "score_changes", "submission_status_changes",
               "asset_accesses", "logins", "learning_outcome_results", "outcome_alignment_clones",
               "conversation_forwards")

FACT_KEY = ("The happening this fact records (events.happening_id): one row however many subscriptions "
            "delivered it.")
GRADE_KEY = ("The grade_change happening (events.happening_id): one row however many subscriptions "
             "delivered it.")
OLD_FACT_KEY = "The event that recorded this fact (canvas.events.event_id)."
OLD_GRADE_KEY = "The grade_change event."
DELIVERY = ("One delivery of the happening (events.event_id): the latest by event time, then event id; every "
            "delivery: events with the same happening_id.")

REAL_USER = ("The masquerading user when an admin acted as user_id (metadata.real_user_id / Caliper actor "
             "extension); NULL when nobody masqueraded.")
USER_LOGIN = "Login of the acting user (only in events emitted by a web request)."
USER_SIS = "SIS id of the acting user (only in events emitted by a web request)."
ROOT_ACCOUNT_UUID = ("Root account the event names (metadata.root_account_uuid / Caliper com.instructure.canvas "
                     "extension of the event or its actor).")
GRADER_REAL_USER = "The masquerading user when an admin graded as grader_id; NULL otherwise."

EVENT_COLUMNS = (
    ("happening_id", sa.Text(),
     "The happening this delivery reports: the Canvas and the Caliper delivery of one happening share it (same "
     "request, event, object and second); fact tables are keyed by it. Equals event_id when the event cannot be "
     "correlated (no request or job id, or a type Canvas sends in one format only)."),
    ("request_id", sa.Text(),
     "The Canvas web request that emitted the event (metadata.request_id / Caliper extension; Canvas Data's "
     "requests.id); NULL for events of background jobs."),
    ("real_user_id", sa.BigInteger(), REAL_USER),
    ("user_login", sa.Text(), USER_LOGIN),
    ("user_sis_id", sa.Text(), USER_SIS),
    ("root_account_id", sa.BigInteger(),
     "Canvas id of the root account (metadata.root_account_id / Caliper actor extension)."),
    ("arrival", postgresql.JSONB(none_as_null=True),
     "How the delivery arrived (signature check, subscription or queue, ingress notes; an LTI notice's JWT): "
     "with payload and received_at, the record the worker normalized, for replay."),
)
EVENTS_COMMENT = (
    "One row per distinct event as delivered; a Caliper envelope yields one row per data[] event (entities it "
    "describes go to caliper_entities). A happening delivered in both formats has two rows with one "
    "happening_id: count distinct happening_id to count happenings.")
OLD_EVENTS_COMMENT = "One row per distinct event; a Caliper envelope yields one row per data[] item."

ACTOR_COLUMNS = (("real_user_id", sa.BigInteger(), REAL_USER), ("user_login", sa.Text(), USER_LOGIN),
                 ("user_sis_id", sa.Text(), USER_SIS), ("root_account_uuid", sa.Text(), ROOT_ACCOUNT_UUID))
FACT_ACTOR_COLUMNS = {
    "asset_accesses": ACTOR_COLUMNS,
    "logins": ACTOR_COLUMNS,
    "grade_changes": (("real_user_id", sa.BigInteger(), GRADER_REAL_USER),
                      ("root_account_uuid", sa.Text(), ROOT_ACCOUNT_UUID)),
}
FACT_COMMENTS = {  # table -> (new, old)
    "grade_changes": ("One row per grade_change happening (history), however many subscriptions delivered it.",
                      "One row per grade_change event (history)."),
    "asset_accesses": ("One row per asset_accessed happening (page views), however many subscriptions delivered it.",
                       "One row per asset_accessed event (page views)."),
    "logins": ("One row per logged_in / logged_out happening, however many subscriptions delivered it.",
               "One row per logged_in / logged_out event."),
}


def _id(path: str) -> str:
    """A Canvas id at a JSON path of the payload, as bigint when it is one (else NULL), like the normalizers."""
    return (f"CASE WHEN payload #>> '{path}' ~ '^[0-9]{{1,18}}$' THEN (payload #>> '{path}')::bigint "
            f"WHEN payload #>> '{path}' ~ '^urn:instructure:canvas:[a-z_:]*:[0-9]{{1,18}}$' "
            f"THEN substring(payload #>> '{path}' from '([0-9]+)$')::bigint END")


def _text(path: str) -> str:
    return f"NULLIF(payload #>> '{path}', '')"


# A Canvas-format row keeps {metadata, body}; a Caliper row keeps its one data[] item (actor extensions
# carry the user's login, SIS id, masquerading user and root account; the item's extensions the request).
_ACTOR = "data,0,actor,extensions,com.instructure.canvas"
_ITEM = "data,0,extensions,com.instructure.canvas"


def backfill_events() -> str:
    def either(canvas: str, caliper: str, read) -> str:
        return (f"CASE format WHEN 'canvas' THEN {read('{metadata,' + canvas + '}')} "
                f"WHEN 'caliper' THEN {read('{' + caliper + '}')} END")

    return f"""
UPDATE {SCHEMA}.events SET
    happening_id = event_id,
    request_id = {either('request_id', _ITEM + ',request_id', _text)},
    real_user_id = {either('real_user_id', _ACTOR + ',real_user_id', _id)},
    user_login = {either('user_login', _ACTOR + ',user_login', _text)},
    user_sis_id = {either('user_sis_id', _ACTOR + ',user_sis_id', _text)},
    root_account_id = {either('root_account_id', _ACTOR + ',root_account_id', _id)}
"""


def backfill_notice_arrivals() -> str:
    """An LTI notice's arrival from what lti_notices kept of it (the JWT, its key id, the client id)."""
    return f"""
UPDATE {SCHEMA}.events e SET arrival = jsonb_build_object(
    'source', 'lti_notice',
    'verification', jsonb_build_object('signed', true, 'kid', n.kid, 'issuer', n.issuer, 'verified_at', NULL),
    'extra', jsonb_build_object('client_id', n.client_id),
    'raw', n.jwt)
FROM {SCHEMA}.lti_notices n
WHERE e.format = 'lti_notice' AND e.event_id = 'lti-notice:' || n.notice_id AND e.arrival IS NULL
"""


def backfill_fact(table: str) -> str:
    """event_id from the key the row had, and the acting user's columns from its event."""
    columns = [name for name, _, _ in FACT_ACTOR_COLUMNS.get(table, ())]
    if not columns:
        return f"UPDATE {SCHEMA}.{table} SET event_id = happening_id"
    targets = ", ".join(["event_id", *columns])
    values = ", ".join(["f.happening_id", *(f"e.{c}" for c in columns)])
    return f"""
UPDATE {SCHEMA}.{table} f SET ({targets}) = (
    SELECT {values} FROM (SELECT 1) AS one LEFT JOIN {SCHEMA}.events e ON e.event_id = f.happening_id)
"""


def upgrade() -> None:
    for name, type_, comment in EVENT_COLUMNS:
        op.add_column("events", sa.Column(name, type_, nullable=True, comment=comment), schema=SCHEMA)
    op.execute(backfill_events())
    op.alter_column("events", "happening_id", nullable=False, schema=SCHEMA)
    op.create_index("events_happening_idx", "events", ["happening_id"], unique=False, schema=SCHEMA)
    op.execute(backfill_notice_arrivals())
    op.create_table_comment("events", EVENTS_COMMENT, existing_comment=OLD_EVENTS_COMMENT, schema=SCHEMA)

    for table in FACT_TABLES:
        op.alter_column(table, "event_id", new_column_name="happening_id",
                        comment=GRADE_KEY if table == "grade_changes" else FACT_KEY, schema=SCHEMA)
        op.add_column(table, sa.Column("event_id", sa.Text(), nullable=True, comment=DELIVERY), schema=SCHEMA)
        for name, type_, comment in FACT_ACTOR_COLUMNS.get(table, ()):
            op.add_column(table, sa.Column(name, type_, nullable=True, comment=comment), schema=SCHEMA)
        op.execute(backfill_fact(table))
    for table, (comment, old) in FACT_COMMENTS.items():
        op.create_table_comment(table, comment, existing_comment=old, schema=SCHEMA)

    op.create_table(
        "caliper_entities",
        sa.Column("id", sa.Text(), nullable=False, comment="The entity's id as described (an IRI or URN)."),
        sa.Column("type", sa.Text(), nullable=True,
                  comment="Caliper type, e.g. Person, CourseSection, Assessment, SoftwareApplication."),
        sa.Column("name", sa.Text(), nullable=True, comment="The entity's name, when described."),
        sa.Column("date_created", postgresql.TIMESTAMP(timezone=True), nullable=True,
                  comment="dateCreated, when described."),
        sa.Column("date_modified", postgresql.TIMESTAMP(timezone=True), nullable=True,
                  comment="dateModified, when described."),
        sa.Column("sensor", sa.Text(), nullable=True, comment="The envelope's sensor: who described it."),
        sa.Column("send_time", postgresql.TIMESTAMP(timezone=True), nullable=True,
                  comment="The envelope's sendTime: each column holds the latest describe's value."),
        sa.Column("entity", postgresql.JSONB(none_as_null=True), nullable=True,
                  comment="The describe as received (latest by sendTime)."),
        sa.Column("last_event_at", postgresql.TIMESTAMP(timezone=True), nullable=True,
                  comment="Time of the newest event that changed this row."),
        sa.Column("field_versions", postgresql.JSONB(none_as_null=True), server_default=sa.text("'{}'::jsonb"),
                  nullable=False,
                  comment="Per column, the event time and id that set it (the order-safety guard)."),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
        comment="Entities a Caliper envelope describes in data[] beside (or instead of) events: one row per "
                "entity id, latest describe by sendTime (per column).",
    )


def downgrade() -> None:
    op.drop_table("caliper_entities", schema=SCHEMA)
    for table, (comment, old) in FACT_COMMENTS.items():
        op.create_table_comment(table, old, existing_comment=comment, schema=SCHEMA)
    for table in FACT_TABLES:
        # A fact merged from two deliveries goes back to being keyed by the delivery it holds.
        op.execute(f"UPDATE {SCHEMA}.{table} SET happening_id = event_id "
                   "WHERE event_id IS NOT NULL AND happening_id <> event_id")
        for name, _, _ in FACT_ACTOR_COLUMNS.get(table, ()):
            op.drop_column(table, name, schema=SCHEMA)
        op.drop_column(table, "event_id", schema=SCHEMA)
        op.alter_column(table, "happening_id", new_column_name="event_id",
                        comment=OLD_GRADE_KEY if table == "grade_changes" else OLD_FACT_KEY, schema=SCHEMA)
    op.create_table_comment("events", OLD_EVENTS_COMMENT, existing_comment=EVENTS_COMMENT, schema=SCHEMA)
    op.drop_index("events_happening_idx", table_name="events", schema=SCHEMA)
    for name, _, _ in reversed(EVENT_COLUMNS):
        op.drop_column("events", name, schema=SCHEMA)
