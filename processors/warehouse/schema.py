"""The warehouse schema, declared once as plain data: every table, its key, columns, kinds and comments.

No SQLAlchemy here. ``processors.warehouse.tables`` builds the SQLAlchemy tables (and so
Alembic's target and the data dictionary) from these declarations, and it alone maps a column
kind to an SQL type. The normalizers read the kinds to coerce values, and the event map is
checked against these columns when it is compiled, so every row change a normalizer produces
names real columns with values of the right kind.

Versioned tables (every table but ``events``, ``quarantine`` and the bookkeeping tables) also get
:data:`VERSION_COLUMNS`: ``last_event_at`` (the newest event that touched the row) and
``field_versions`` (column -> version of the event that set it), which make the writer's upserts
order-safe per column.

Fact tables (one row per happening: grade changes, page views, logins, ...) are keyed by
``happening_id``, not by the delivery's event id: an institution subscribed in both formats gets
each happening twice (a Canvas and a Caliper event), and a fact must be counted once (see
``processors.normalize.happening``).

History tables (``partitioned=True``: ``events`` and the fact tables) are range-partitioned by month
on ``event_time`` (:data:`PARTITION_COLUMN`). PostgreSQL requires the partition key in every unique
key, so it is part of their key and never NULL: ``events`` is keyed by ``(event_id, event_time)``
(the event's own time, the epoch when it has none: ``model.history_time``), facts by
``(happening_id, event_time)`` where ``event_time`` is the happening's time to the second
(``model.happening_time``), the same for the Canvas and the Caliper delivery and for every
redelivery. docs/retention.md says why.

:data:`SCHEMA`, the PostgreSQL schema everything lives in, is the one value read from the
environment (``WAREHOUSE_SCHEMA``, default ``canvas_stream``), once, at import: everything that
names the schema (tables, writer, migrations, views, docs generators, tests) takes it from here.

Personal data is declared in one register at the end (``_personal``): what each column holds
(:class:`Personal`) and, for a column that names a person, what erasure does with its row
(:class:`PersonRef`, :class:`Owned`). The data dictionary, erasure and pseudonymization read it;
docs/privacy.md explains it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from canvas_stream.settings import configured_warehouse_schema

SCHEMA: str = configured_warehouse_schema()
# Where releases before migration 0007 kept everything, and where Canvas Data 2's client puts its
# own tables: never ours to create in; migrations/env.py moves a previous release's warehouse out.
LEGACY_SCHEMA = "canvas"


class Kind(enum.Enum):
    """What a column holds: how a normalizer coerces a value to it, and (in tables.py) its SQL type."""

    ID = "id"  # bigint Canvas id (string, number or urn), stored in CD2's form (processors/normalize/ids.py)
    INT = "int"  # bigint count/position
    FLOAT = "float"
    BOOL = "bool"
    TIME = "time"  # timestamptz
    TEXT = "text"
    JSON = "json"  # jsonb, for arrays and objects


# Short names for the declarations below.
ID, INT, FLOAT, BOOL, TIME, TEXT, JSON = Kind.ID, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.TIME, Kind.TEXT, Kind.JSON


class Personal(enum.Enum):
    """What personal data a column holds (the data dictionary shows it; docs/privacy.md explains it)."""

    USER_ID = "user id"  # names a person by an id: Canvas user id, uuid, SIS or LTI user id
    NAME = "name"
    LOGIN = "login"
    EMAIL = "email"
    IP_ADDRESS = "IP address"
    USER_AGENT = "user agent"
    SESSION = "session id"
    CONTENT = "content"  # free text, URLs or raw events written by or about people: may hold anything
    TOKEN = "signed token"  # a compact JWS: its (base64) claims hold personal data


# What ``PSEUDONYMIZE=true`` replaces with keyed hashes before anything is stored.
PSEUDONYMIZED = frozenset({Personal.LOGIN, Personal.EMAIL, Personal.IP_ADDRESS, Personal.USER_AGENT})


class Role(enum.Enum):
    """What erasing a person does to a row whose column names that person."""

    SUBJECT = "subject"  # the row is about the person (their enrollment, page view, post): deleted
    REFERENCE = "reference"  # another person's row names them (as grader, observer, ...): the column is cleared


@dataclass(frozen=True, slots=True)
class PersonRef:
    """A column that names a person. ``when``: a condition on the same row that must hold, as plain
    data (column, value), e.g. ``context_type = 'User'``; ``clears``: columns cleared with it."""

    role: Role
    when: tuple[str, str] | None = None
    clears: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Owned:
    """A column holding the id of a row of ``table``: when erasure deletes that row as the person's,
    this row goes too (e.g. the comments on the person's submission). ``when`` as in PersonRef."""

    table: str
    when: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    kind: Kind = TEXT
    comment: str | None = None
    nullable: bool = True
    server_default: str | None = None  # an SQL expression, e.g. "now()"
    # Personal data (set by the register at the end of this module, see ``_personal``).
    personal: Personal | None = None
    person: PersonRef | None = None
    owned_by: Owned | None = None


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    columns: tuple[str, ...]
    where: str | None = None  # an SQL predicate: a partial index


@dataclass(frozen=True)
class TableSpec:
    """One warehouse table. ``fed_by``: what writes to it, when not derived from the event map."""

    name: str
    keys: tuple[Col, ...]
    columns: tuple[Col, ...]
    comment: str
    indexes: tuple[IndexSpec, ...] = ()
    versioned: bool = True
    fed_by: tuple[str, ...] | None = None
    # False for a table that holds source data no events row keeps (caliper_entities): replay leaves it.
    rebuilt_by_replay: bool = True
    partitioned: bool = False  # range-partitioned by month on PARTITION_COLUMN (history tables)
    # Derived once here, not per event: the data columns a change may set, and every column's kind.
    data_columns: frozenset[str] = field(init=False, repr=False, compare=False)
    kinds: dict[str, Kind] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_columns", frozenset(c.name for c in self.columns))
        object.__setattr__(self, "kinds", {c.name: c.kind for c in self.all_columns()})

    def all_columns(self) -> tuple[Col, ...]:
        """Every column in table order: keys, data columns, then the version columns if versioned."""
        return (*self.keys, *self.columns, *(VERSION_COLUMNS if self.versioned else ()))


VERSION_COLUMNS = (
    Col("last_event_at", TIME, "Time of the newest event that changed this row."),
    Col("field_versions", JSON, "Per column, the event time and id that set it (the order-safety guard).",
        nullable=False, server_default="'{}'::jsonb"),
)
VERSION_COLUMN_NAMES = frozenset(c.name for c in VERSION_COLUMNS)

# History tables are partitioned by month on this column; it is part of their key (never NULL).
PARTITION_COLUMN = "event_time"

TABLE_SPECS: dict[str, TableSpec] = {}


def _table(name: str, keys: list[Col], *columns: Col, comment: str, **options: Any) -> TableSpec:
    spec = TableSpec(name, tuple(keys), tuple(columns), comment, **options)
    TABLE_SPECS[name] = spec
    return spec


def _id(comment: str) -> list[Col]:
    return [Col("id", ID, comment)]


# The partition key of events: the event's own time, so every redelivery has the key of the first.
EVENT_KEY_TIME = Col("event_time", TIME, "When the event happened (metadata.event_time / eventTime; an LTI notice's "
                     "timestamp); 1970-01-01 when the event carries no time. Part of the key: the partition key "
                     "(monthly partitions).", nullable=False)
# The partition key of facts: the happening's time to the second, the same for every delivery of it.
HAPPENING_TIME = Col("event_time", TIME, "When the happening happened, to the second (its Canvas and Caliper "
                     "deliveries may differ below it; events.event_time has the delivery's precision); 1970-01-01 "
                     "when the event carries no time. Part of the key: the partition key (monthly partitions).",
                     nullable=False)


def _fact(comment: str = "The happening this fact records (events.happening_id): one row however many "
          "subscriptions delivered it.") -> list[Col]:
    return [Col("happening_id", TEXT, comment), HAPPENING_TIME]


# The first data column of every fact table: which delivery's values the row holds.
DELIVERY = Col("event_id", TEXT, "One delivery of the happening (events.event_id): the latest by event time, then "
               "event id; every delivery: events with the same happening_id.")


C = Col

# What the event's metadata says about who acted (fact tables analysts filter on it carry these too).
REAL_USER = C("real_user_id", ID, "The masquerading user when an admin acted as user_id (metadata.real_user_id / "
              "Caliper actor extension); NULL when nobody masqueraded.")
USER_LOGIN = C("user_login", TEXT, "Login of the acting user (only in events emitted by a web request).")
USER_SIS = C("user_sis_id", TEXT, "SIS id of the acting user (only in events emitted by a web request).")
ROOT_ACCOUNT_UUID = C("root_account_uuid", TEXT, "Root account the event names (metadata.root_account_uuid / "
                      "Caliper com.instructure.canvas extension of the event or its actor).")
CTX_ID = C("context_id", ID, "Canvas id of the owning context (see context_type).")
CTX_TYPE = C("context_type", TEXT, "Course, Account, Group, User, ...")
WS = C("workflow_state", TEXT, "Canvas workflow_state; 'deleted' after a *_deleted event (rows are kept).")

# --- every event, and what could not be stored ------------------------------------------------

_table(
    "events", [C("event_id", TEXT, "Caliper: the event id; Canvas format: sha256 of the canonical event."),
               EVENT_KEY_TIME],
    C("event_name", TEXT, "Canvas event name, e.g. grade_change, both formats.", nullable=False),
    C("format", TEXT, "canvas, caliper or lti_notice.", nullable=False),
    C("received_at", TIME, "Earliest time the ingress received it.", nullable=False),
    C("user_id", ID, "Acting user (metadata.user_id / Caliper actor)."),
    C("context_type", TEXT, "Course, Account, Group, ..."),
    C("context_id", ID, "Canvas id of the context."),
    C("payload", JSON, "The event as received.", nullable=False),
    C("subscription", TEXT, "What delivered it first: the Data Services subscription id (signed HTTPS token's "
      "subscription.id) or the SQS queue URL; NULL when unknown (unsigned, LTI, before 0006)."),
    ROOT_ACCOUNT_UUID,
    C("happening_id", TEXT, "The happening this delivery reports: the Canvas and the Caliper delivery of one "
      "happening share it (same request, event, object and second); fact tables are keyed by it. Equals event_id "
      "when the event cannot be correlated (no request or job id, or a type Canvas sends in one format only).",
      nullable=False),
    C("request_id", TEXT, "The Canvas web request that emitted the event (metadata.request_id / Caliper "
      "extension; Canvas Data's requests.id); NULL for events of background jobs."),
    REAL_USER, USER_LOGIN, USER_SIS,
    C("root_account_id", ID, "Canvas id of the root account (metadata.root_account_id / Caliper actor extension)."),
    C("arrival", JSON, "How the delivery arrived (signature check, subscription or queue, ingress notes; an LTI "
      "notice's JWT): with payload and received_at, the record the worker normalized, for replay."),
    comment="One row per distinct event as delivered; a Caliper envelope yields one row per data[] event (entities it "
            "describes go to caliper_entities). A happening delivered in both formats has two rows with one "
            "happening_id: count distinct happening_id to count happenings.",
    # (event_name, event_time, user_id): user_id makes "active users per day" an index-only scan (benchmarks/
    # queries.py: 16k buffers read instead of the table's 750k at 3M events); the prefix serves the rest.
    indexes=(IndexSpec("events_name_time_user_idx", ("event_name", "event_time", "user_id")),
             IndexSpec("events_context_idx", ("context_id", "event_time")),
             IndexSpec("events_received_at_idx", ("received_at",)),
             IndexSpec("events_happening_idx", ("happening_id",)),
             IndexSpec("events_user_time_idx", ("user_id", "event_time"))),
    versioned=False, fed_by=("every event",), partitioned=True,
)
_table(
    "quarantine", [C("id", TEXT, "sha256 of the raw message (idempotent).")],
    C("received_at", TIME, nullable=False, server_default="now()"),
    C("reason", TEXT, "Why it could not be normalized or stored.", nullable=False),
    C("source", TEXT, "live_event, lti_notice or kafka."),
    C("raw", TEXT, "The raw record or message, as received.", nullable=False),
    C("retried_at", TIME, "When an operator last retried it."),
    C("resolved", BOOL, nullable=False, server_default="false"),
    comment="Authentic deliveries that broke normalization or a constraint; nothing is dropped.",
    indexes=(IndexSpec("quarantine_unresolved_idx", ("received_at",), where="NOT resolved"),),
    versioned=False, fed_by=("any event that fails",),
)

# --- entities a Caliper envelope describes beside its events (source data, not events) --------

_table(
    "caliper_entities", [C("id", TEXT, "The entity's id as described (an IRI or URN).")],
    C("type", TEXT, "Caliper type, e.g. Person, CourseSection, Assessment, SoftwareApplication."),
    C("name", TEXT, "The entity's name, when described."),
    C("date_created", TIME, "dateCreated, when described."),
    C("date_modified", TIME, "dateModified, when described."),
    C("sensor", TEXT, "The envelope's sensor: who described it."),
    C("send_time", TIME, "The envelope's sendTime: each column holds the latest describe's value."),
    C("entity", JSON, "The describe as received (latest by sendTime)."),
    comment="Entities a Caliper envelope describes in data[] beside (or instead of) events: one row per entity "
            "id, latest describe by sendTime (per column).",
    fed_by=("Caliper entity describes",), rebuilt_by_replay=False,
)

# --- entities ---------------------------------------------------------------------------------

_table(
    "accounts", _id("Canvas account id."),
    C("name"), C("root_account_id", ID), C("root_account_uuid"), C("parent_account_id", ID),
    C("external_status"), WS, C("domain"), C("default_time_zone"), C("default_locale"),
    comment="Current state of each account.",
)
_table(
    "account_notifications", _id("Canvas account notification id."),
    C("subject"), C("message", TEXT, "HTML message of the announcement."), C("icon"),
    C("start_at", TIME), C("end_at", TIME),
    comment="Global announcements (account notifications).",
)
_table(
    "courses", _id("Canvas course id."),
    C("name"), C("course_code"), C("account_id", ID), C("root_account_id", ID), C("enrollment_term_id", ID),
    C("sis_source_id"), C("uuid"), C("workflow_state"), C("created_at", TIME), C("updated_at", TIME),
    C("start_at", TIME), C("conclude_at", TIME),
    C("syllabus_body", TEXT, "HTML of the course syllabus (syllabus_updated)."),
    comment="Current state of each course.",
)
_table(
    "course_sections", _id("Canvas course section id."),
    C("course_id", ID), C("name"), C("sis_source_id"), C("sis_batch_id", ID), C("integration_id"),
    C("root_account_id", ID), C("enrollment_term_id", ID),
    C("nonxlist_course_id", ID, "The course the section belonged to before it was cross-listed."),
    C("default_section", BOOL), C("accepting_enrollments", BOOL), C("can_manually_enroll", BOOL),
    C("restrict_enrollments_to_section_dates", BOOL), C("start_at", TIME), C("end_at", TIME),
    C("stuck_sis_fields", JSON, "Fields changed outside SIS that SIS imports will not overwrite."), WS,
    comment="Current state of each course section.",
    indexes=(IndexSpec("course_sections_course_idx", ("course_id",)),),
)
_table(
    "users", _id("Canvas user id."),
    C("name"), C("short_name"), C("sortable_name"), C("uuid"), C("workflow_state"), C("user_login"),
    C("user_sis_id"), C("created_at", TIME), C("updated_at", TIME),
    comment="Current state of each user.",
)
_table(
    "user_account_associations",
    [C("user_id", ID, "Canvas user id."), C("account_id", ID, "Canvas account id.")],
    C("account_uuid"), C("is_admin", BOOL), C("created_at", TIME), C("updated_at", TIME),
    comment="Which accounts each user is associated with.",
)
_table(
    "enrollments", _id("Canvas enrollment id."),
    C("course_id", ID), C("course_section_id", ID), C("user_id", ID), C("user_name"),
    C("type", TEXT, "StudentEnrollment, TeacherEnrollment, ..."), C("workflow_state"),
    C("associated_user_id", ID), C("limit_privileges_to_course_section", BOOL),
    C("created_at", TIME), C("updated_at", TIME),
    comment="Current state of each enrollment.",
    indexes=(IndexSpec("enrollments_course_idx", ("course_id",)), IndexSpec("enrollments_user_idx", ("user_id",)),
             IndexSpec("enrollments_section_idx", ("course_section_id",))),
)
_table(
    "enrollment_states", [C("enrollment_id", ID, "Canvas enrollment id.")],
    C("state", TEXT, "Effective state (e.g. active, pending_invited, completed, deleted)."),
    C("state_is_current", BOOL, "False when the state must be recalculated."),
    C("access_is_current", BOOL), C("restricted_access", BOOL, "True when term/course dates restrict access."),
    C("state_started_at", TIME), C("state_valid_until", TIME),
    comment="Current computed state of each enrollment (EnrollmentState).",
)
_table(
    "assignment_groups", _id("Canvas assignment group id."),
    C("course_id", ID, "The context of the group (always a course)."), C("context_type"), C("name"),
    C("position", INT), C("group_weight", FLOAT, "Percent weight when the course weights groups."),
    C("rules", TEXT, "Drop rules, e.g. 'drop_lowest:1\\n'."), C("sis_source_id"),
    C("integration_data", JSON), WS,
    comment="Current state of each assignment group.",
)
_table(
    "assignments", _id("Canvas assignment id."),
    C("course_id", ID), C("context_type"), C("assignment_group_id", ID), C("title"), C("description"),
    C("points_possible", FLOAT), C("due_at", TIME), C("unlock_at", TIME), C("lock_at", TIME),
    C("submission_types"), C("workflow_state"), C("created_at", TIME), C("updated_at", TIME),
    C("context_uuid"), C("created_on_blueprint_sync", BOOL, "Created by a blueprint course sync."),
    C("lti_assignment_id", TEXT, "LTI id of the assignment (uuid)."), C("lti_resource_link_id"),
    C("lti_resource_link_id_duplicated_from"), C("assignment_id_duplicated_from", ID),
    C("domain_duplicated_from"), C("domain"),
    comment="Current state of each assignment.",
    indexes=(IndexSpec("assignments_course_idx", ("course_id",)),),
)
_table(
    "assignment_overrides", _id("Canvas assignment override id."),
    C("assignment_id", ID), C("quiz_id", ID),
    C("type", TEXT, "Who the override applies to: CourseSection, Group or ADHOC (a list of students)."),
    C("course_section_id", ID), C("group_id", ID), C("due_at", TIME), C("all_day", BOOL),
    C("all_day_date", TIME), C("unlock_at", TIME), C("lock_at", TIME), WS,
    comment="Current state of each assignment override (different dates for a section, group or students).",
)
_table(
    "submissions", _id("Canvas submission id."),
    C("assignment_id", ID), C("user_id", ID), C("grader_id", ID), C("workflow_state"), C("score", FLOAT),
    C("grade"), C("submission_type"), C("attempt", INT), C("late", BOOL), C("missing", BOOL),
    C("submitted_at", TIME), C("graded_at", TIME), C("updated_at", TIME),
    C("created_at", TIME), C("body", TEXT, "Text of an online_text_entry submission."), C("url"),
    C("group_id", ID, "The group, for a group assignment."), C("lti_assignment_id"), C("lti_user_id"),
    C("course_id", ID), C("submission_status", TEXT, "Custom grade status name."),
    C("submission_status_id", ID, "Custom grade status id."),
    comment="Current state of each submission, from submission events and grade_change.",
    indexes=(IndexSpec("submissions_assignment_idx", ("assignment_id",)),
             IndexSpec("submissions_user_idx", ("user_id",))),
)
_table(
    "submission_comments", _id("Canvas submission comment id."),
    C("submission_id", ID), C("user_id", ID, "The author."), C("body"), C("created_at", TIME),
    C("attachment_ids", JSON, "Ids of attached files."),
    comment="Comments on submissions.",
)
_table(
    "quizzes", _id("Canvas (classic) quiz id."),
    C("assignment_id", ID), C("context_id", ID), C("context_type"), C("context_uuid"), C("title"),
    C("description"), C("quiz_type", TEXT, "practice_quiz, assignment, graded_survey or survey."),
    C("points_possible", FLOAT), C("due_at", TIME), C("lock_at", TIME), C("unlock_at", TIME),
    C("time_limit", INT, "Minutes."), C("access_code", TEXT, "Access code (or 'true' when only flagged)."),
    C("ip_filter"), C("shuffle_answers", BOOL), C("allowed_attempts", INT), C("scoring_policy"),
    C("hide_results"), C("show_correct_answers", BOOL), C("show_correct_answers_at", TIME),
    C("hide_correct_answers_at", TIME), C("show_correct_answers_last_attempt", BOOL),
    C("one_question_at_a_time", BOOL), C("cant_go_back", BOOL), C("one_time_results", BOOL),
    C("anonymous_submissions", BOOL), C("require_lockdown_browser", BOOL),
    C("require_lockdown_browser_for_results", BOOL), C("disable_timer_autosubmission", BOOL),
    C("only_visible_to_overrides", BOOL), WS, C("created_at", TIME), C("updated_at", TIME),
    comment="Current state of each classic quiz.",
)
_table(
    "quiz_submissions", _id("Canvas quiz submission id."),
    C("quiz_id", ID), C("user_id", ID, "The student (metadata user / Caliper assignee)."),
    C("submitted_at", TIME, "Time of the quiz_submitted event."),
    comment="Quiz submissions (quiz_submitted).",
)
_table(
    "discussion_topics", _id("Canvas discussion topic id."),
    C("context_id", ID), C("context_type"), C("title"), C("body", TEXT, "HTML message of the topic."),
    C("assignment_id", ID, "Set for graded discussions."), C("is_announcement", BOOL), C("lock_at", TIME),
    C("updated_at", TIME), WS,
    comment="Current state of each discussion topic and announcement.",
)
_table(
    "discussion_entries", _id("Canvas discussion entry id."),
    C("discussion_topic_id", ID), C("parent_discussion_entry_id", ID, "Set for replies to an entry."),
    C("user_id", ID, "The author."), C("text", TEXT, "HTML of the entry."), C("created_at", TIME),
    C("assignment_id", ID, "Set for graded discussions (discussion_entry_submitted)."),
    C("submission_id", ID, "Set for graded discussions (discussion_entry_submitted)."),
    comment="Discussion entries (posts and replies).",
)
_table(
    "wiki_pages", _id("Canvas wiki page id."),
    C("title"), C("body", TEXT, "HTML of the page."), WS,
    comment="Current state of each wiki page.",
)
_table(
    "attachments", _id("Canvas attachment (file) id."),
    C("context_id", ID), C("context_type"), C("user_id", ID, "Uploader."), C("folder_id", ID),
    C("display_name"), C("filename"), C("content_type", TEXT, "MIME type."), C("lock_at", TIME),
    C("unlock_at", TIME), C("created_at", TIME), C("updated_at", TIME), WS,
    comment="Current state of each file.",
)
_table(
    "modules", _id("Canvas context module id."),
    C("context_id", ID), C("context_type"), C("name"), C("position", INT), WS,
    comment="Current state of each module (Canvas ContextModule).",
)
_table(
    "module_items", _id("Canvas module item (content tag) id."),
    C("module_id", ID), C("context_id", ID), C("context_type"), C("position", INT), WS,
    comment="Current state of each module item.",
)
_table(
    "groups", _id("Canvas group id."),
    C("name", TEXT, "group_name in the event."), C("context_id", ID), C("context_type"), C("account_id", ID),
    C("group_category_id", ID), C("group_category_name"), C("max_membership", INT), C("uuid"), WS,
    comment="Current state of each group.",
)
_table(
    "group_categories", _id("Canvas group category (group set) id."),
    C("name", TEXT, "group_category_name in the event."), C("context_id", ID), C("context_type"),
    C("group_limit", INT, "Maximum members per group."),
    comment="Current state of each group category (group set).",
)
_table(
    "group_memberships", _id("Canvas group membership id."),
    C("group_id", ID), C("user_id", ID), C("group_name"), C("group_category_id", ID),
    C("group_category_name"), C("workflow_state", TEXT, "accepted, invited, requested or deleted."),
    comment="Current state of each group membership.",
)
_table(
    "learning_outcomes", _id("Canvas learning outcome id."),
    C("context_id", ID), C("context_type"), C("title"), C("display_name"), C("short_description"),
    C("description"), C("vendor_guid"), C("calculation_method"),
    C("calculation_int", INT, "Parameter of the calculation method (e.g. decaying average weight)."),
    C("rubric_criterion", JSON, "Mastery points, points possible and ratings."), C("updated_at", TIME), WS,
    comment="Current state of each learning outcome.",
)
_table(
    "learning_outcome_groups", _id("Canvas learning outcome group id."),
    C("context_id", ID), C("context_type"), C("title"), C("description"), C("vendor_guid"),
    C("parent_outcome_group_id", ID), C("updated_at", TIME), WS,
    comment="Current state of each learning outcome group.",
)
_table(
    "learning_outcome_links", _id("Canvas learning outcome link (content tag) id."),
    C("context_id", ID), C("context_type"), C("learning_outcome_id", ID), C("learning_outcome_group_id", ID),
    C("updated_at", TIME), WS,
    comment="Current state of each link of an outcome into an outcome group.",
)
_table(
    "outcome_calculation_methods", _id("Canvas outcome calculation method id."),
    C("context_id", ID), C("context_type"), C("calculation_method"), C("calculation_int", INT),
    C("updated_at", TIME), WS,
    comment="Current outcome calculation method per context.",
)
_table(
    "outcome_proficiencies", _id("Canvas outcome proficiency id."),
    C("context_id", ID), C("context_type"), C("outcome_proficiency_ratings", JSON, "The mastery scale."),
    C("updated_at", TIME), WS,
    comment="Current outcome proficiency (mastery scale) per context.",
)
_table(
    "rubric_assessments", _id("Canvas rubric assessment id."),
    C("artifact_id", ID), C("artifact_type", TEXT, "What was assessed, e.g. Submission."),
    C("assessment_type", TEXT, "grading, peer_review or provisional_grade."), C("aligned_to_outcomes", BOOL),
    C("context_uuid"), C("attempt", INT), C("submitted_at", TIME), C("created_at", TIME), C("updated_at", TIME),
    comment="Current state of each rubric assessment.",
)
_table(
    "conversations", _id("Canvas conversation id."),
    C("updated_at", TIME), C("last_forwarded_at", TIME, "Time of the latest conversation_forwarded event."),
    comment="Conversations (inbox threads).",
)
_table(
    "conversation_messages", _id("Canvas conversation message id."),
    C("conversation_id", ID), C("author_id", ID), C("created_at", TIME),
    comment="Messages in conversations.",
)
_table(
    "lti_resource_links", _id("Canvas LTI resource link id."),
    C("resource_link_uuid"), C("lookup_uuid"), C("context_id", ID), C("context_type"),
    C("context_external_tool_id", ID), C("url"), WS,
    comment="Current state of each LTI 1.3 resource link.",
)
_table(
    "content_migrations", _id("Canvas content migration id."),
    C("context_id", ID), C("context_type"), C("context_uuid"), C("migration_type"),
    C("import_quizzes_next", BOOL), C("lti_context_id"), C("source_course_lti_id"), C("source_course_uuid"),
    C("destination_course_lti_id"), C("domain"),
    C("started_at", TIME, "Time of content_migration_started."),
    C("completed_at", TIME, "Time of content_migration_completed."),
    comment="Content migrations (course copies and imports).",
)
_table(
    "master_migrations", _id("Canvas blueprint (master) migration id."),
    C("master_template_id", ID), C("account_id", ID), C("account_uuid"), C("blueprint_course_id", ID),
    C("blueprint_course_uuid"), C("started_at", TIME, "Time of master_migration_started."),
    comment="Blueprint course syncs.",
)
_table(
    "sis_batches", _id("Canvas SIS import id."),
    C("account_id", ID), WS,
    comment="Current state of each SIS import.",
)
_table(
    "scores", _id("Canvas score id."),
    C("enrollment_id", ID), C("user_id", ID), C("course_id", ID),
    C("grading_period_id", ID, "Null for the course total."), C("override_score", FLOAT),
    C("override_status", TEXT, "Custom grade status of the final grade."),
    C("override_status_id", ID), C("updated_at", TIME),
    comment="Final-grade overrides per enrollment score (grade_override, final_grade_custom_status).",
)
_table(
    "course_scores",
    [C("course_id", ID, "Canvas course id."), C("user_id", ID, "The student.")],
    C("current_score", FLOAT, "Course score counting only graded assignments."),
    C("final_score", FLOAT, "Course score counting ungraded assignments as zero."),
    C("unposted_current_score", FLOAT, "current_score including unposted grades."),
    C("unposted_final_score", FLOAT, "final_score including unposted grades."),
    C("workflow_state"), C("created_at", TIME), C("updated_at", TIME),
    comment="Current course grade per student (course_grade_change).",
)
_table(
    "course_progress",
    [C("course_id", ID, "Canvas course id."), C("user_id", ID, "The student.")],
    C("course_name"), C("course_account_id", ID), C("course_sis_source_id"), C("user_name"), C("user_email"),
    C("requirement_count", INT, "Module requirements in the course."),
    C("requirement_completed_count", INT, "Module requirements the student completed."),
    C("next_requirement_url", TEXT, "URL of the next module item to complete."),
    C("completed_at", TIME, "When the student completed all requirements."),
    comment="Module progress per student (course_progress, course_completed).",
)

# --- facts (one row per happening; partitioned by month) -----------------------------------

_table(
    "grade_changes", _fact("The grade_change happening (events.happening_id): one row however many subscriptions "
                           "delivered it."), DELIVERY,
    C("submission_id", ID), C("assignment_id", ID), C("user_id", ID, "The student."), C("grader_id", ID),
    C("score", FLOAT), C("old_score", FLOAT), C("grade"), C("old_grade"), C("points_possible", FLOAT),
    C("old_points_possible", FLOAT), C("grading_complete", BOOL), C("muted", BOOL),
    C("student_id", ID, "Same as user_id."), C("student_sis_id"),
    C("real_user_id", ID, "The masquerading user when an admin graded as grader_id; NULL otherwise."),
    ROOT_ACCOUNT_UUID,
    comment="One row per grade_change happening (history), however many subscriptions delivered it.",
    indexes=(IndexSpec("grade_changes_submission_idx", ("submission_id", "event_time")),),
    partitioned=True,
)
_table(
    "course_grade_changes", _fact(), DELIVERY,
    C("course_id", ID), C("user_id", ID, "The student."), C("workflow_state"),
    C("current_score", FLOAT), C("old_current_score", FLOAT), C("final_score", FLOAT), C("old_final_score", FLOAT),
    C("unposted_current_score", FLOAT), C("old_unposted_current_score", FLOAT),
    C("unposted_final_score", FLOAT), C("old_unposted_final_score", FLOAT),
    C("created_at", TIME), C("updated_at", TIME),
    comment="One row per course_grade_change event (history of course scores).",
    partitioned=True,
)
_table(
    "score_changes", _fact(), DELIVERY,
    C("score_id", ID), C("enrollment_id", ID), C("user_id", ID), C("course_id", ID), C("grading_period_id", ID),
    C("override_score", FLOAT), C("old_override_score", FLOAT), C("override_status"), C("override_status_id", ID),
    C("old_override_status"), C("old_override_status_id", ID), C("updated_at", TIME),
    comment="One row per grade_override / final_grade_custom_status event (history).",
    partitioned=True,
)
_table(
    "submission_status_changes", _fact(), DELIVERY,
    C("submission_id", ID), C("assignment_id", ID), C("user_id", ID), C("course_id", ID),
    C("submission_status"), C("submission_status_id", ID), C("old_submission_status"),
    C("old_submission_status_id", ID), C("updated_at", TIME),
    comment="One row per submission_custom_grade_status event (history).",
    partitioned=True,
)
_table(
    "asset_accesses", _fact(), DELIVERY,
    C("user_id", ID, "Who accessed it."),
    C("asset_id", ID), C("asset_type", TEXT, "course, assignment, attachment, quizzes:quiz, ..."),
    C("asset_subtype", TEXT, "Page of a course/group, e.g. files, grades, modules."),
    C("asset_name"), C("category", TEXT, "Canvas page category (canvas format only)."),
    C("role", TEXT, "Enrollment type of the accessing user in the context."), C("level"),
    C("filename"), C("display_name"), C("url", TEXT, "URL of an external tool or link asset."), C("domain"),
    CTX_TYPE, CTX_ID, C("context_account_id", ID), C("http_method"),
    C("request_url", TEXT, "URL of the request (metadata.url / request_url)."),
    C("client_ip"), C("session_id"), C("user_agent"), C("developer_key_id", ID),
    REAL_USER, USER_LOGIN, USER_SIS, ROOT_ACCOUNT_UUID,
    comment="One row per asset_accessed happening (page views), however many subscriptions delivered it.",
    indexes=(IndexSpec("asset_accesses_context_idx", ("context_id", "event_time")),
             IndexSpec("asset_accesses_user_idx", ("user_id", "event_time"))),
    partitioned=True,
)
_table(
    "logins", _fact(), DELIVERY,
    C("event_name", TEXT, "logged_in or logged_out."), C("user_id", ID),
    C("redirect_url", TEXT, "Where the user was sent after logging in."), C("client_ip"), C("session_id"),
    C("user_agent"), C("hostname"),
    REAL_USER, USER_LOGIN, USER_SIS, ROOT_ACCOUNT_UUID,
    comment="One row per logged_in / logged_out happening, however many subscriptions delivered it.",
    partitioned=True,
)
_table(
    "learning_outcome_results", _fact(), DELIVERY,
    C("learning_outcome_result_id", ID, "The result id (only in learning_outcome_result_updated)."),
    C("learning_outcome_id", ID), C("user_uuid", TEXT, "uuid of the assessed user."),
    C("learning_outcome_context_uuid"), C("result_context_id", ID), C("result_context_type"),
    C("result_context_uuid"), C("artifact_id", ID), C("artifact_type"), C("artifact_created_at", TIME),
    C("artifact_updated_at", TIME), C("associated_asset_id", ID), C("associated_asset_type"),
    C("attempt", INT), C("score", FLOAT), C("possible", FLOAT), C("percent", FLOAT), C("mastery", BOOL),
    C("original_score", FLOAT), C("original_possible", FLOAT), C("original_mastery", BOOL),
    C("assessed_at", TIME), C("created_at", TIME), C("updated_at", TIME),
    comment="One row per learning outcome result event (the created event carries no result id).",
    partitioned=True,
)
_table(
    "outcome_alignment_clones", _fact(), DELIVERY,
    C("original_course_uuid"), C("new_course_uuid"), C("new_course_resource_link_id"), C("domain"),
    C("original_assignment_resource_link_id"), C("new_assignment_resource_link_id"), C("status"),
    comment="One row per outcomes.retry_outcome_alignment_clone event.",
    partitioned=True,
)
_table(
    "conversation_forwards", _fact(), DELIVERY,
    C("conversation_id", ID), C("user_id", ID, "Who forwarded it."), C("updated_at", TIME),
    comment="One row per conversation_forwarded event.",
    partitioned=True,
)

# --- LTI Platform Notification Service notices (processors.normalize.notices) ---------------

_table(
    "lti_notices",
    [C("notice_id", TEXT, "notice.id (a UUID per notice); the key that makes a repeated delivery a no-op.")],
    C("notice_type", TEXT, "notice.type, e.g. LtiContextCopyNotice (any type, known or not)."),
    C("issuer", TEXT, "iss of the notice JWT (the platform)."),
    C("client_id", TEXT, "The tool's client id the notice was addressed to (aud/azp)."),
    C("deployment_id", TEXT, "LTI deployment_id claim, '<tool id>:<context lti id>' on Canvas."),
    C("context_id", TEXT, "LTI context id (context claim id; opaque, not a Canvas id)."),
    C("context_type", TEXT, "Context kind: Course, Account or the raw LTI type."),
    C("user_sub", TEXT, "sub claim (the user's LTI id) when the notice has one."),
    C("notice_timestamp", TIME, "notice.timestamp: when the notified event happened."),
    C("received_at", TIME, "When the ingress received and verified the notice."),
    C("kid", TEXT, "Key id of the platform key that signed it."),
    C("claims", JSON, "All decoded JWT claims, as received."),
    C("jwt", TEXT, "The compact JWS as received (re-verifiable while the platform key lives)."),
    comment="Every verified LTI PNS notice, once per notice id, whatever its type.",
    indexes=(IndexSpec("lti_notices_type_time_idx", ("notice_type", "notice_timestamp")),),
    fed_by=("every LTI notice",),
)
_table(
    "context_copies",
    [C("context_id", TEXT, "LTI context id of the destination course."),
     C("origin_context_id", TEXT,
       "LTI context id of the source course (origin_contexts[0]); '' when Canvas omits it.")],
    C("context_title", TEXT, "Title of the destination course."),
    C("context_label", TEXT, "Label (course code) of the destination course."),
    C("deployment_id", TEXT, "LTI deployment that received the notice."),
    C("notice_id", TEXT, "The latest notice that reported this copy."),
    C("notice_timestamp", TIME, "When the content was copied (notice.timestamp)."),
    comment="Course copies: which course's content was imported into which (LtiContextCopyNotice).",
    fed_by=("LtiContextCopyNotice",),
)
_table(
    "asset_processor_submissions",
    [C("submission_id", TEXT, "submission.id, '<submission lti id>:<attempt>'; a resubmission reuses it."),
     C("activity_id", TEXT, "activity.id: the asset processor attached to the assignment.")],
    C("for_user_id", TEXT, "for_user.user_id: the student who submitted (LTI id)."),
    C("assets", JSON, "assetservice.assets: asset_id, url, sha256_checksum (base64), size, ..."),
    C("report_url", TEXT, "assetreport.report_url: where processing reports are POSTed."),
    C("deployment_id", TEXT, "LTI deployment that received the notice."),
    C("context_id", TEXT, "LTI context id of the course."),
    C("notice_id", TEXT, "The latest notice for this submission (a Resubmit sends a new one)."),
    C("notice_timestamp", TIME, "notice.timestamp of that notice."),
    comment="Submissions handed to an asset processor (LtiAssetProcessorSubmissionNotice), latest notice wins.",
    fed_by=("LtiAssetProcessorSubmissionNotice",),
)
_table(
    "lti_deployments",
    [C("deployment_id", TEXT, "LTI deployment_id.")],
    C("client_id", TEXT, "The tool's client id for this deployment."),
    C("hello_world_at", TIME, "Handler verified at: time of the latest LtiHelloWorldNotice."),
    C("hello_world_notice_id", TEXT, "Id of that LtiHelloWorldNotice."),
    C("last_notice_at", TIME, "Time of the latest notice of any type for this deployment."),
    comment="LTI deployments seen in notices; hello_world_at shows the notice handler works.",
    fed_by=("every LTI notice",),
)

# --- operations: what the system watches about itself (not event data) ----------------------

_table(
    "ingress_answers",
    [C("minute", TIME, "Start of the minute the answers were given in."),
     C("route", TEXT, "Route template, e.g. /live-events."),
     C("replica", TEXT, "Ingress process that answered: host:pid:start time."),
     C("code", INT, "HTTP status code of the answers.")],
    C("answers", INT, "Answers with this code in this minute.", nullable=False),
    C("slow", INT, "How many of them took 15 s or more (Canvas: a timeout).", nullable=False),
    comment="Ingress answers to Canvas per minute, route, replica and status: the source of the 24-hour "
            "deactivation budget (operational; not event data).",
    indexes=(IndexSpec("ingress_answers_minute_idx", ("minute",)),),
    versioned=False, fed_by=("every ingress answer on a Canvas route",),
)
_table(
    "lti_nonces",
    [C("nonce", TEXT, "nonce claim of a verified LTI notice (Canvas: a random UUID per notice JWT).")],
    C("notice_id", TEXT, "notice.id of the notice that carried it first; the same nonce under another notice id "
      "is a replay and is rejected.", nullable=False),
    C("expires_at", TIME, "exp of that notice's JWT plus LTI_LEEWAY_SECONDS: the token is refused after this "
      "anyway, so the ingress purges the row.", nullable=False),
    C("seen_at", TIME, "When an ingress replica first recorded it.", nullable=False, server_default="now()"),
    comment="LTI notice nonces seen by any ingress replica within their token's lifetime: replay protection "
            "(operational; not event data).",
    indexes=(IndexSpec("lti_nonces_expires_at_idx", ("expires_at",)),),
    versioned=False, fed_by=("the ingress, for every verified LTI notice",),
)
_table(
    "lti_handler_subscriptions",
    [C("deployment_id", TEXT, "LTI deployment_id the platform's notice-handlers endpoint answered for."),
     C("notice_type", TEXT, "Notice type subscribed, e.g. LtiHelloWorldNotice.")],
    C("handler", TEXT, "Handler URL subscribed; '' after an unsubscribe.", nullable=False),
    C("max_batch_size", INT, "max_batch_size sent with the subscription, if any."),
    C("pns_url", TEXT, "The platform's notice-handlers URL the subscription was sent to."),
    C("set_at", TIME, "When `canvas-stream notice-handlers set` sent it (taken before the call: Canvas sends "
      "the LtiHelloWorldNotice at once).", nullable=False),
    comment="Notice handlers subscribed with `canvas-stream notice-handlers set`, per deployment and type; "
            "the hello-world check waits from set_at (operational; kept apart from lti_deployments, which "
            "`canvas-stream replay` rebuilds from events).",
    versioned=False, fed_by=("canvas-stream notice-handlers set",),
)

# --- retention's evidence (canvas-stream retention apply, the scheduled run) -----------------

_table(
    "retention_runs", [C("id", TEXT, "Run id (a UUID).")],
    C("started_at", TIME, "When the run started.", nullable=False, server_default="now()"),
    C("finished_at", TIME, "When it finished."),
    C("trigger", TEXT, "cli, or scheduled (and which host ran it)."),
    C("actions", JSON, "What went: partitions dropped (estimated rows), rows pruned, per table.", nullable=False,
      server_default="'[]'::jsonb"),
    comment="Every retention run that changed something, and every scheduled run: the evidence that retention "
            "is applied (docs/retention.md). Never expires.",
    versioned=False, fed_by=("canvas-stream retention apply", "the scheduled retention run"),
)

# --- erasure (canvas-stream erase; docs/privacy.md) ------------------------------------------

_table(
    "erasures", [C("id", TEXT, "Erasure request id (a UUID, printed by canvas-stream erase).")],
    C("requested_by", TEXT, "Who asked for it (--requested-by: an officer, a ticket), never the person erased.",
      nullable=False),
    C("requested_at", TIME, "When the request was recorded.", nullable=False, server_default="now()"),
    C("completed_at", TIME, "When every table was processed; NULL while running or if interrupted (run again)."),
    C("rows", JSON, "Per table: rows deleted and rows redacted.", nullable=False, server_default="'{}'::jsonb"),
    comment="Audit of erasure requests: who asked, when, how many rows; nothing about the person.",
    versioned=False, fed_by=("canvas-stream erase",),
)
_table(
    "erased_users", [C("erasure_id", TEXT, "The erasures row that added this person.")],
    C("global_id", ID, "The person's Canvas user id in global form (shard * 10^13 + local id), when known."),
    C("local_id", ID, "The person's Canvas user id in local form.", nullable=False),
    C("stored_ids", JSON, "The form(s) the warehouse's id columns hold the person's id in (CANVAS_HOME_SHARD).",
      nullable=False, server_default="'[]'::jsonb"),
    C("identifiers", JSON, "Opaque ids of the person (uuid, LTI user ids) that later events may carry instead.",
      nullable=False, server_default="'[]'::jsonb"),
    C("identifier_hashes", JSON, "sha256 of the erasure id and the person's login, email, SIS id and names: "
      "recognises them in later events that name the person by id, without keeping the values.",
      nullable=False, server_default="'[]'::jsonb"),
    C("erased_at", TIME, nullable=False, server_default="now()"),
    comment="Suppression list of erased people (ids, opaque ids and salted hashes: no name, login or email), "
            "read by the workers.",
    versioned=False, fed_by=("canvas-stream erase",),
)

# --- the register of personal data ------------------------------------------------------------
#
# Every column that holds personal data, and for a column that names a person what erasure does
# with its row. One place, so that the data protection officer reads one list (the data
# dictionary's "personal data" and "erasure" columns are generated from it); ``_personal`` fails
# at import for a column that does not exist.


@dataclass(frozen=True, slots=True)
class Mark:
    personal: Personal
    person: PersonRef | None = None
    owned_by: Owned | None = None
    comment: str | None = None  # replaces the column's comment (what the column means for a person)


USER_CONTEXT = ("context_type", "User")
SUBJ = Mark(Personal.USER_ID, PersonRef(Role.SUBJECT))  # the row is the person's: deleted
REF = Mark(Personal.USER_ID, PersonRef(Role.REFERENCE))  # another person's row names them: cleared
USER_CONTEXT_REF = Mark(Personal.USER_ID, PersonRef(Role.REFERENCE, when=USER_CONTEXT))
USER_ID, NAME, LOGIN, EMAIL = (Mark(Personal.USER_ID), Mark(Personal.NAME), Mark(Personal.LOGIN),
                               Mark(Personal.EMAIL))
IP, AGENT, SESSION = Mark(Personal.IP_ADDRESS), Mark(Personal.USER_AGENT), Mark(Personal.SESSION)
CONTENT, TOKEN = Mark(Personal.CONTENT), Mark(Personal.TOKEN)
# What every event says of the acting user, in events and the fact tables analysts filter on.
ACTING = {"real_user_id": REF, "user_login": LOGIN, "user_sis_id": USER_ID}
NETWORK = {"client_ip": IP, "session_id": SESSION, "user_agent": AGENT}


def _personal(table: str, **marks: Mark) -> None:
    spec = TABLE_SPECS[table]
    names = {c.name for c in spec.all_columns()}
    unknown = set(marks) - names
    if unknown:
        raise ValueError(f"personal-data register: {table} has no column {sorted(unknown)}")

    def marked(col: Col) -> Col:
        mark = marks.get(col.name)
        if mark is None:
            return col
        return replace(col, personal=mark.personal, person=mark.person, owned_by=mark.owned_by,
                       comment=mark.comment if mark.comment is not None else col.comment)

    TABLE_SPECS[table] = replace(spec, keys=tuple(marked(c) for c in spec.keys),
                                 columns=tuple(marked(c) for c in spec.columns))


_personal("events", user_id=REF, context_id=USER_CONTEXT_REF, payload=CONTENT, arrival=CONTENT, **ACTING)
_personal("quarantine", reason=CONTENT, raw=CONTENT)
_personal("caliper_entities", id=Mark(Personal.USER_ID, PersonRef(Role.SUBJECT, when=("type", "Person"))),
          name=NAME, entity=CONTENT)
_personal("users", id=SUBJ, name=NAME, short_name=NAME, sortable_name=NAME, uuid=USER_ID, user_login=LOGIN,
          user_sis_id=USER_ID)
_personal("user_account_associations", user_id=SUBJ)
_personal("enrollments", user_id=SUBJ, user_name=NAME, associated_user_id=Mark(
    Personal.USER_ID, PersonRef(Role.REFERENCE), comment="The observed student, for an observer enrollment."))
_personal("enrollment_states", enrollment_id=Mark(Personal.USER_ID, owned_by=Owned("enrollments")))
_personal("submissions", user_id=Mark(Personal.USER_ID, PersonRef(Role.SUBJECT), comment="The student."),
          grader_id=REF, body=CONTENT, url=CONTENT, lti_user_id=USER_ID)
_personal("submission_comments", user_id=SUBJ, body=CONTENT, submission_id=Mark(
    Personal.USER_ID, owned_by=Owned("submissions"),
    comment="The submission commented on (comments on an erased person's work go with it)."))
_personal("quiz_submissions", user_id=SUBJ)
_personal("courses", syllabus_body=CONTENT)
_personal("wiki_pages", body=CONTENT)
_personal("discussion_topics", body=CONTENT)
_personal("discussion_entries", user_id=SUBJ, text=CONTENT)
_personal("attachments", user_id=REF, context_id=Mark(
    Personal.USER_ID, PersonRef(Role.SUBJECT, when=USER_CONTEXT),
    comment="Canvas id of the owning context; a user's own files have context_type User."))
_personal("group_memberships", user_id=SUBJ)
_personal("rubric_assessments", artifact_id=Mark(
    Personal.USER_ID, owned_by=Owned("submissions", when=("artifact_type", "Submission")),
    comment="What was assessed: a submission's assessment goes with the erased submission."))
_personal("conversation_messages", author_id=SUBJ)
_personal("scores", user_id=SUBJ)
_personal("course_scores", user_id=SUBJ)
_personal("course_progress", user_id=SUBJ, user_name=NAME, user_email=EMAIL, next_requirement_url=CONTENT)
_personal("grade_changes", user_id=SUBJ, student_id=SUBJ, grader_id=REF, student_sis_id=USER_ID,
          real_user_id=REF)
for _name in ("course_grade_changes", "score_changes", "submission_status_changes", "conversation_forwards"):
    _personal(_name, user_id=SUBJ)
_personal("asset_accesses", user_id=SUBJ, context_id=USER_CONTEXT_REF, request_url=CONTENT, url=CONTENT,
          asset_name=Mark(Personal.NAME, comment="Name of the asset (a person's name for a profile page)."),
          asset_id=Mark(Personal.USER_ID, PersonRef(Role.REFERENCE, when=("asset_type", "user"),
                                                    clears=("asset_name",)),
                        comment="The asset; a user's id when asset_type is user (a profile page)."),
          **NETWORK, **ACTING)
_personal("logins", user_id=SUBJ, redirect_url=CONTENT, **NETWORK, **ACTING)
_personal("learning_outcome_results", user_uuid=SUBJ)
_personal("lti_notices", claims=CONTENT, user_sub=Mark(Personal.USER_ID, PersonRef(Role.REFERENCE, clears=("jwt",))),
          jwt=Mark(Personal.TOKEN, comment="The compact JWS as received (re-verifiable while the platform key lives); "
                   "NULL when pseudonymizing or after erasing a person it names."))
_personal("asset_processor_submissions", for_user_id=SUBJ, assets=CONTENT)
_personal("erased_users", global_id=USER_ID, local_id=USER_ID, stored_ids=USER_ID, identifiers=USER_ID)
