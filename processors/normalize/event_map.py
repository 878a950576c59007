"""Which columns of which warehouse tables each Canvas event feeds: the event map, as plain data.

Both formats go through it (see ``apply``): the Canvas normalizer with ``metadata`` and ``body``
as received, the Caliper normalizer with a Canvas-shaped ``(meta, body)`` rebuilt from the item.
A field source is written as a short string in the declarations (a body key, ``@event_id``,
``@happening_id``, ``@event_time``, ``@event_name``, ``@meta.<key>``, or ``=<value>`` for a
constant) and parsed here, once, into a typed :data:`Source`; ``apply`` then never interprets a
string per event.

Fact tables are keyed by ``@happening_id`` (see ``happening``): :data:`BOTH_FORMATS` names the
event types Canvas sends in both formats and where each one's object is read from, which is what
correlates a Canvas and a Caliper delivery of one happening.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BodyField:
    """A key of the event body (after flattening)."""

    key: str

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class MetaField:
    """A key of the event metadata (``@meta.<key>``); absent when the metadata lacks the key."""

    key: str

    def __str__(self) -> str:
        return f"@meta.{self.key}"


@dataclass(frozen=True, slots=True)
class Constant:
    """A fixed value (``=<value>``), e.g. ``workflow_state = 'deleted'`` for a *_deleted event."""

    value: str

    def __str__(self) -> str:
        return f"={self.value}"


class EventValue(enum.Enum):
    """A value of the event itself rather than a key of its body or metadata."""

    EVENT_ID = "@event_id"
    HAPPENING_ID = "@happening_id"  # what the event reports (the key of fact rows): ``processors.normalize.happening``
    EVENT_TIME = "@event_time"
    EVENT_NAME = "@event_name"  # the name the event is mapped under (after :func:`resolve_event_name`)

    def __str__(self) -> str:
        return self.value


Source = BodyField | MetaField | Constant | EventValue


def parse_source(text: str) -> Source:
    """The typed source a declaration string stands for; raises ValueError for an unknown ``@`` name."""
    if text.startswith("="):
        return Constant(text[1:])
    if text.startswith("@meta."):
        return MetaField(text[len("@meta."):])
    if text.startswith("@"):
        try:
            return EventValue(text)
        except ValueError:
            raise ValueError(f"unknown field source {text!r}") from None
    return BodyField(text)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one event's fields go in one table.

    ``key``: key column -> source. ``rename``: body key -> column (default: same name).
    ``extra``: column -> source, set in addition to the body's fields. ``ignore``: body keys that
    are known but deliberately not stored in this table (they stay in ``events.payload``).
    """

    table: str
    key: Mapping[str, Source]
    rename: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Source] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EventSpec:
    targets: tuple[Target, ...]
    flatten: Mapping[str, str] = field(default_factory=dict)  # nested object key -> prefix


@dataclass(frozen=True, slots=True)
class ObjectOf:
    """Where a happening's object is read: columns of the row change this event makes to ``table``
    (key or data columns, after coercion, so both formats compare the same values)."""

    table: str
    columns: tuple[str, ...]


EVENTS: dict[str, EventSpec] = {}


def _ev(names: str, *targets: Target, flatten: Mapping[str, str] | None = None) -> None:
    for name in names.split():
        EVENTS[name] = EventSpec(tuple(targets), dict(flatten or {}))


def T(table: str, key: str | Mapping[str, str], *, rename: Mapping[str, str] | None = None,
      extra: Mapping[str, str] | None = None, ignore: str = "") -> Target:
    """A target from declaration strings: ``key`` is a body key for the ``id`` column, or column -> source."""
    keys = {"id": key} if isinstance(key, str) else dict(key)
    return Target(
        table,
        key={column: parse_source(src) for column, src in keys.items()},
        rename=dict(rename or {}),
        extra={column: parse_source(src) for column, src in (extra or {}).items()},
        ignore=frozenset(ignore.split()),
    )


FACT = {"happening_id": "@happening_id"}
DELETED = {"workflow_state": "=deleted"}


def F(table: str, *, extra: Mapping[str, str] | None = None, **options: Any) -> Target:
    """A fact target: keyed by the happening, recording which delivery's values it holds."""
    return T(table, FACT, extra={"event_id": "@event_id", **(extra or {})}, **options)


_ev("account_created account_updated", T("accounts", "account_id"))
_ev("account_notification_created", T("account_notifications", "account_notification_id"))
_ev("course_created course_updated", T("courses", "course_id"))
_ev("syllabus_updated", T("courses", "course_id", ignore="old_syllabus_body"))
_ev("course_section_created course_section_updated", T("course_sections", "course_section_id"))
_ev("user_created user_updated", T("users", "user_id"))
_ev("user_account_association_created",
    T("user_account_associations", {"user_id": "user_id", "account_id": "account_id"}))
_ev("enrollment_created enrollment_updated", T("enrollments", "enrollment_id"))
_ev("enrollment_state_created enrollment_state_updated",
    T("enrollment_states", {"enrollment_id": "enrollment_id"}))
_ev("assignment_group_created assignment_group_updated",
    T("assignment_groups", "assignment_group_id", rename={"context_id": "course_id"}))
_ev("assignment_created assignment_updated",
    T("assignments", "assignment_id",
      rename={"context_id": "course_id", "assignment_id_duplicated__from": "assignment_id_duplicated_from"}))
_ev("assignment_override_created assignment_override_updated",
    T("assignment_overrides", "assignment_override_id"))
_ev("submission_created submission_updated plagiarism_resubmit", T("submissions", "submission_id"))
_ev("grade_change",
    T("submissions", "submission_id"),  # the body keys submissions has no column for go to grade_changes
    F("grade_changes", extra={"event_time": "@event_time", "real_user_id": "@meta.real_user_id",
                              "root_account_uuid": "@meta.root_account_uuid"}))
_ev("submission_custom_grade_status",
    T("submissions", "submission_id", ignore="old_submission_status old_submission_status_id"),
    F("submission_status_changes", extra={"event_time": "@event_time"}))
_ev("submission_comment_created", T("submission_comments", "submission_comment_id"))
_ev("quiz_created quiz_updated", T("quizzes", "quiz_id"))
_ev("quiz_submitted",
    T("quiz_submissions", "submission_id", extra={"user_id": "@meta.user_id", "submitted_at": "@event_time"}))
_ev("discussion_topic_created discussion_topic_updated", T("discussion_topics", "discussion_topic_id"))
_ev("discussion_entry_created discussion_entry_submitted", T("discussion_entries", "discussion_entry_id"))
_ev("wiki_page_created wiki_page_updated", T("wiki_pages", "wiki_page_id", ignore="old_title old_body"))
_ev("wiki_page_deleted", T("wiki_pages", "wiki_page_id", extra=DELETED))
_ev("attachment_created attachment_updated", T("attachments", "attachment_id", ignore="old_display_name"))
_ev("attachment_deleted", T("attachments", "attachment_id", extra=DELETED))
_ev("module_created module_updated", T("modules", "module_id"))
_ev("module_item_created module_item_updated", T("module_items", "module_item_id"))
_ev("group_created group_updated", T("groups", "group_id", rename={"group_name": "name"}))
_ev("group_category_created group_category_updated",
    T("group_categories", "group_category_id", rename={"group_category_name": "name"}))
_ev("group_membership_created group_membership_updated", T("group_memberships", "group_membership_id"))
_ev("learning_outcome_created learning_outcome_updated", T("learning_outcomes", "learning_outcome_id"))
_ev("learning_outcome_group_created learning_outcome_group_updated",
    T("learning_outcome_groups", "learning_outcome_group_id"))
_ev("learning_outcome_link_created learning_outcome_link_updated",
    T("learning_outcome_links", "learning_outcome_link_id"))
_ev("learning_outcome_result_created learning_outcome_result_updated",
    F("learning_outcome_results", rename={"id": "learning_outcome_result_id"},
      extra={"event_time": "@event_time"}))
_ev("outcome_calculation_method_created outcome_calculation_method_updated",
    T("outcome_calculation_methods", "outcome_calculation_method_id"))
_ev("outcome_proficiency_created outcome_proficiency_updated",
    T("outcome_proficiencies", "outcome_proficiency_id"))
_ev("outcomes.retry_outcome_alignment_clone",
    F("outcome_alignment_clones", extra={"event_time": "@event_time"}))
_ev("rubric_assessed", T("rubric_assessments", "id"))
_ev("conversation_created", T("conversations", "conversation_id"))
_ev("conversation_forwarded",
    T("conversations", "conversation_id", extra={"last_forwarded_at": "@event_time"}),
    F("conversation_forwards", extra={"user_id": "@meta.user_id", "event_time": "@event_time"}))
_ev("conversation_message_created", T("conversation_messages", "message_id"))
_ev("lti_resource_link_created lti_resource_link_updated", T("lti_resource_links", "resource_link_id"))
_ev("content_migration_started",
    T("content_migrations", "content_migration_id", extra={"started_at": "@event_time"}))
_ev("content_migration_completed",
    T("content_migrations", "content_migration_id", extra={"completed_at": "@event_time"}))
_ev("master_migration_started",
    T("master_migrations", "master_migration_id", extra={"started_at": "@event_time"}))
_ev("sis_batch_created sis_batch_updated", T("sis_batches", "sis_batch_id"))
_ev("grade_override final_grade_custom_status",
    T("scores", "score_id", ignore="old_override_score old_override_status old_override_status_id"),
    F("score_changes", extra={"event_time": "@event_time"}))
_ev("course_grade_change",
    T("course_scores", {"course_id": "course_id", "user_id": "user_id"},
      ignore="old_current_score old_final_score old_unposted_current_score old_unposted_final_score"),
    F("course_grade_changes", extra={"event_time": "@event_time"}))
_ev("course_progress course_completed",
    T("course_progress", {"course_id": "course_id", "user_id": "user_id"}),
    flatten={"course": "course_", "user": "user_", "progress": ""})
_META_ACCESS = {
    "event_time": "@event_time", "user_id": "@meta.user_id", "context_type": "@meta.context_type",
    "context_id": "@meta.context_id", "context_account_id": "@meta.context_account_id",
    "http_method": "@meta.http_method", "request_url": "@meta.url", "client_ip": "@meta.client_ip",
    "session_id": "@meta.session_id", "user_agent": "@meta.user_agent",
    "developer_key_id": "@meta.developer_key_id",
}
# Who acted, as the metadata says it, on the facts analysts filter by it (masquerading, tenant).
_META_ACTOR = {
    "real_user_id": "@meta.real_user_id", "user_login": "@meta.user_login", "user_sis_id": "@meta.user_sis_id",
    "root_account_uuid": "@meta.root_account_uuid",
}
_ev("asset_accessed", F("asset_accesses", extra={**_META_ACCESS, **_META_ACTOR}))
_ev("logged_in logged_out",
    F("logins", extra={
        "event_name": "@event_name", "event_time": "@event_time", "user_id": "@meta.user_id",
        "client_ip": "@meta.client_ip", "session_id": "@meta.session_id", "user_agent": "@meta.user_agent",
        "hostname": "@meta.hostname", **_META_ACTOR,
    }))

# Event types Canvas sends in both formats (the Caliper rules of ``caliper.RULES``; a test keeps the two
# lists equal), each with where its object is read: by default the key of its first target. Only these
# are correlated across formats (see ``happening``): a type sent in one format only cannot arrive twice
# as two different events, so its happening is its event.
BOTH_FORMATS: dict[str, ObjectOf] = {}


def _both(names: str, obj: ObjectOf | None = None) -> None:
    for name in names.split():
        first = EVENTS[name].targets[0]
        BOTH_FORMATS[name] = obj or ObjectOf(first.table, tuple(first.key))


_both("assignment_created assignment_updated assignment_override_created assignment_override_updated "
      "attachment_created attachment_updated attachment_deleted course_created course_updated syllabus_updated "
      "discussion_entry_created discussion_topic_created enrollment_created enrollment_updated "
      "enrollment_state_created enrollment_state_updated grade_change group_category_created group_created "
      "group_membership_created quiz_created quiz_updated quiz_submitted submission_created submission_updated "
      "user_account_association_created wiki_page_created wiki_page_updated wiki_page_deleted")
_both("asset_accessed", ObjectOf("asset_accesses", ("asset_type", "asset_subtype", "asset_id")))
_both("logged_in logged_out", ObjectOf("logins", ("user_id",)))


def resolve_event_name(name: str, body: Mapping[str, Any]) -> str:
    """The mapping to use for an event name, allowing for one documented mislabel.

    Canvas's own grade_override example carries ``metadata.event_name = "grade_change"`` with a
    grade_override body (score_id/override_score, no submission_id); such a body can only be a
    grade override, so it is mapped as one (the event row keeps the name it was sent with).
    """
    if name == "grade_change" and "submission_id" not in body and "override_score" in body:
        return "grade_override"
    return name


def fed_by() -> dict[str, list[str]]:
    """Table name -> sorted event names whose mapping writes to it (for the data dictionary)."""
    out: dict[str, set[str]] = {}
    for event, spec in EVENTS.items():
        for target in spec.targets:
            out.setdefault(target.table, set()).add(event)
    return {name: sorted(events) for name, events in out.items()}
