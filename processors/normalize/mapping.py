"""The warehouse schema and the event -> table mapping, as plain data shared by both normalizers.

Pure: no SQLAlchemy here. ``processors.warehouse.tables`` builds its ``Table`` objects from
``TABLE_SPECS`` (so every column a normalizer may set is, by construction, a column of the table,
with the type the normalizer coerces to), and ``fed_by`` is derived from ``EVENTS``.

Both formats go through :func:`apply_mapping`: the Canvas normalizer passes ``metadata`` and
``body`` as received; the Caliper normalizer first rebuilds a Canvas-shaped ``(meta, body)`` from
the Caliper item (only the fields Caliper carries), so both formats produce the same columns with
the same coercions for the same fact.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .model import NormalizationError, RowChange, make_version, parse_time, to_id

# Column kinds: how a value is coerced, and (in tables.py) the SQL type.
ID = "id"  # bigint Canvas id (string, number or urn)
INT = "int"  # bigint count/position
FLOAT = "float"
BOOL = "bool"
TIME = "time"  # timestamptz
TEXT = "text"
JSON = "json"  # jsonb, for arrays and objects

KINDS = (ID, INT, FLOAT, BOOL, TIME, TEXT, JSON)


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    kind: str = TEXT
    comment: str | None = None


@dataclass(frozen=True)  # no slots: the cached properties below need an instance __dict__
class TableSpec:
    name: str
    keys: tuple[Col, ...]
    columns: tuple[Col, ...]
    comment: str

    # Computed once per table, not per event (the normalizers ask for them on every row change).
    @functools.cached_property
    def column_names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns)

    @functools.cached_property
    def kinds(self) -> dict[str, str]:
        return {c.name: c.kind for c in (*self.keys, *self.columns)}


TABLE_SPECS: dict[str, TableSpec] = {}


def _table(name: str, keys: list[Col], *columns: Col, comment: str) -> TableSpec:
    spec = TableSpec(name, tuple(keys), tuple(columns), comment)
    TABLE_SPECS[name] = spec
    return spec


def _id(comment: str) -> list[Col]:
    return [Col("id", ID, comment)]


def _fact(comment: str = "The event that recorded this fact (canvas.events.event_id).") -> list[Col]:
    return [Col("event_id", TEXT, comment)]


C = Col
EVENT_TIME = C("event_time", TIME, "When the event happened (metadata.event_time / eventTime).")
CTX_ID = C("context_id", ID, "Canvas id of the owning context (see context_type).")
CTX_TYPE = C("context_type", TEXT, "Course, Account, Group, User, ...")
WS = C("workflow_state", TEXT, "Canvas workflow_state; 'deleted' after a *_deleted event (rows are kept).")

# --- entities ---------------------------------------------------------------------------------

_table(
    "accounts", _id("Canvas global account id."),
    C("name"), C("root_account_id", ID), C("root_account_uuid"), C("parent_account_id", ID),
    C("external_status"), WS, C("domain"), C("default_time_zone"), C("default_locale"),
    comment="Current state of each account.",
)
_table(
    "account_notifications", _id("Canvas global account notification id."),
    C("subject"), C("message", TEXT, "HTML message of the announcement."), C("icon"),
    C("start_at", TIME), C("end_at", TIME),
    comment="Global announcements (account notifications).",
)
_table(
    "courses", _id("Canvas global course id."),
    C("name"), C("course_code"), C("account_id", ID), C("root_account_id", ID), C("enrollment_term_id", ID),
    C("sis_source_id"), C("uuid"), C("workflow_state"), C("created_at", TIME), C("updated_at", TIME),
    C("start_at", TIME), C("conclude_at", TIME),
    C("syllabus_body", TEXT, "HTML of the course syllabus (syllabus_updated)."),
    comment="Current state of each course.",
)
_table(
    "course_sections", _id("Canvas global course section id."),
    C("course_id", ID), C("name"), C("sis_source_id"), C("sis_batch_id", ID), C("integration_id"),
    C("root_account_id", ID), C("enrollment_term_id", ID),
    C("nonxlist_course_id", ID, "The course the section belonged to before it was cross-listed."),
    C("default_section", BOOL), C("accepting_enrollments", BOOL), C("can_manually_enroll", BOOL),
    C("restrict_enrollments_to_section_dates", BOOL), C("start_at", TIME), C("end_at", TIME),
    C("stuck_sis_fields", JSON, "Fields changed outside SIS that SIS imports will not overwrite."), WS,
    comment="Current state of each course section.",
)
_table(
    "users", _id("Canvas global user id."),
    C("name"), C("short_name"), C("sortable_name"), C("uuid"), C("workflow_state"), C("user_login"),
    C("user_sis_id"), C("created_at", TIME), C("updated_at", TIME),
    comment="Current state of each user.",
)
_table(
    "user_account_associations",
    [C("user_id", ID, "Canvas global user id."), C("account_id", ID, "Canvas global account id.")],
    C("account_uuid"), C("is_admin", BOOL), C("created_at", TIME), C("updated_at", TIME),
    comment="Which accounts each user is associated with.",
)
_table(
    "enrollments", _id("Canvas global enrollment id."),
    C("course_id", ID), C("course_section_id", ID), C("user_id", ID), C("user_name"),
    C("type", TEXT, "StudentEnrollment, TeacherEnrollment, ..."), C("workflow_state"),
    C("associated_user_id", ID), C("limit_privileges_to_course_section", BOOL),
    C("created_at", TIME), C("updated_at", TIME),
    comment="Current state of each enrollment.",
)
_table(
    "enrollment_states", [C("enrollment_id", ID, "Canvas global enrollment id.")],
    C("state", TEXT, "Effective state (e.g. active, pending_invited, completed, deleted)."),
    C("state_is_current", BOOL, "False when the state must be recalculated."),
    C("access_is_current", BOOL), C("restricted_access", BOOL, "True when term/course dates restrict access."),
    C("state_started_at", TIME), C("state_valid_until", TIME),
    comment="Current computed state of each enrollment (EnrollmentState).",
)
_table(
    "assignment_groups", _id("Canvas global assignment group id."),
    C("course_id", ID, "The context of the group (always a course)."), C("context_type"), C("name"),
    C("position", INT), C("group_weight", FLOAT, "Percent weight when the course weights groups."),
    C("rules", TEXT, "Drop rules, e.g. 'drop_lowest:1\\n'."), C("sis_source_id"),
    C("integration_data", JSON), WS,
    comment="Current state of each assignment group.",
)
_table(
    "assignments", _id("Canvas global assignment id."),
    C("course_id", ID), C("context_type"), C("assignment_group_id", ID), C("title"), C("description"),
    C("points_possible", FLOAT), C("due_at", TIME), C("unlock_at", TIME), C("lock_at", TIME),
    C("submission_types"), C("workflow_state"), C("created_at", TIME), C("updated_at", TIME),
    C("context_uuid"), C("created_on_blueprint_sync", BOOL, "Created by a blueprint course sync."),
    C("lti_assignment_id", TEXT, "LTI id of the assignment (uuid)."), C("lti_resource_link_id"),
    C("lti_resource_link_id_duplicated_from"), C("assignment_id_duplicated_from", ID),
    C("domain_duplicated_from"), C("domain"),
    comment="Current state of each assignment.",
)
_table(
    "assignment_overrides", _id("Canvas global assignment override id."),
    C("assignment_id", ID), C("quiz_id", ID),
    C("type", TEXT, "Who the override applies to: CourseSection, Group or ADHOC (a list of students)."),
    C("course_section_id", ID), C("group_id", ID), C("due_at", TIME), C("all_day", BOOL),
    C("all_day_date", TIME), C("unlock_at", TIME), C("lock_at", TIME), WS,
    comment="Current state of each assignment override (different dates for a section, group or students).",
)
_table(
    "submissions", _id("Canvas global submission id."),
    C("assignment_id", ID), C("user_id", ID), C("grader_id", ID), C("workflow_state"), C("score", FLOAT),
    C("grade"), C("submission_type"), C("attempt", INT), C("late", BOOL), C("missing", BOOL),
    C("submitted_at", TIME), C("graded_at", TIME), C("updated_at", TIME),
    C("created_at", TIME), C("body", TEXT, "Text of an online_text_entry submission."), C("url"),
    C("group_id", ID, "The group, for a group assignment."), C("lti_assignment_id"), C("lti_user_id"),
    C("course_id", ID), C("submission_status", TEXT, "Custom grade status name."),
    C("submission_status_id", ID, "Custom grade status id."),
    comment="Current state of each submission, from submission events and grade_change.",
)
_table(
    "submission_comments", _id("Canvas global submission comment id."),
    C("submission_id", ID), C("user_id", ID, "The author."), C("body"), C("created_at", TIME),
    C("attachment_ids", JSON, "Ids of attached files."),
    comment="Comments on submissions.",
)
_table(
    "quizzes", _id("Canvas global (classic) quiz id."),
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
    "quiz_submissions", _id("Canvas global quiz submission id."),
    C("quiz_id", ID), C("user_id", ID, "The student (metadata user / Caliper assignee)."),
    C("submitted_at", TIME, "Time of the quiz_submitted event."),
    comment="Quiz submissions (quiz_submitted).",
)
_table(
    "discussion_topics", _id("Canvas global discussion topic id."),
    C("context_id", ID), C("context_type"), C("title"), C("body", TEXT, "HTML message of the topic."),
    C("assignment_id", ID, "Set for graded discussions."), C("is_announcement", BOOL), C("lock_at", TIME),
    C("updated_at", TIME), WS,
    comment="Current state of each discussion topic and announcement.",
)
_table(
    "discussion_entries", _id("Canvas global discussion entry id."),
    C("discussion_topic_id", ID), C("parent_discussion_entry_id", ID, "Set for replies to an entry."),
    C("user_id", ID, "The author."), C("text", TEXT, "HTML of the entry."), C("created_at", TIME),
    C("assignment_id", ID, "Set for graded discussions (discussion_entry_submitted)."),
    C("submission_id", ID, "Set for graded discussions (discussion_entry_submitted)."),
    comment="Discussion entries (posts and replies).",
)
_table(
    "wiki_pages", _id("Canvas global wiki page id."),
    C("title"), C("body", TEXT, "HTML of the page."), WS,
    comment="Current state of each wiki page.",
)
_table(
    "attachments", _id("Canvas global attachment (file) id."),
    C("context_id", ID), C("context_type"), C("user_id", ID, "Uploader."), C("folder_id", ID),
    C("display_name"), C("filename"), C("content_type", TEXT, "MIME type."), C("lock_at", TIME),
    C("unlock_at", TIME), C("created_at", TIME), C("updated_at", TIME), WS,
    comment="Current state of each file.",
)
_table(
    "modules", _id("Canvas global context module id."),
    C("context_id", ID), C("context_type"), C("name"), C("position", INT), WS,
    comment="Current state of each module (Canvas ContextModule).",
)
_table(
    "module_items", _id("Canvas global module item (content tag) id."),
    C("module_id", ID), C("context_id", ID), C("context_type"), C("position", INT), WS,
    comment="Current state of each module item.",
)
_table(
    "groups", _id("Canvas global group id."),
    C("name", TEXT, "group_name in the event."), C("context_id", ID), C("context_type"), C("account_id", ID),
    C("group_category_id", ID), C("group_category_name"), C("max_membership", INT), C("uuid"), WS,
    comment="Current state of each group.",
)
_table(
    "group_categories", _id("Canvas global group category (group set) id."),
    C("name", TEXT, "group_category_name in the event."), C("context_id", ID), C("context_type"),
    C("group_limit", INT, "Maximum members per group."),
    comment="Current state of each group category (group set).",
)
_table(
    "group_memberships", _id("Canvas global group membership id."),
    C("group_id", ID), C("user_id", ID), C("group_name"), C("group_category_id", ID),
    C("group_category_name"), C("workflow_state", TEXT, "accepted, invited, requested or deleted."),
    comment="Current state of each group membership.",
)
_table(
    "learning_outcomes", _id("Canvas global learning outcome id."),
    C("context_id", ID), C("context_type"), C("title"), C("display_name"), C("short_description"),
    C("description"), C("vendor_guid"), C("calculation_method"),
    C("calculation_int", INT, "Parameter of the calculation method (e.g. decaying average weight)."),
    C("rubric_criterion", JSON, "Mastery points, points possible and ratings."), C("updated_at", TIME), WS,
    comment="Current state of each learning outcome.",
)
_table(
    "learning_outcome_groups", _id("Canvas global learning outcome group id."),
    C("context_id", ID), C("context_type"), C("title"), C("description"), C("vendor_guid"),
    C("parent_outcome_group_id", ID), C("updated_at", TIME), WS,
    comment="Current state of each learning outcome group.",
)
_table(
    "learning_outcome_links", _id("Canvas global learning outcome link (content tag) id."),
    C("context_id", ID), C("context_type"), C("learning_outcome_id", ID), C("learning_outcome_group_id", ID),
    C("updated_at", TIME), WS,
    comment="Current state of each link of an outcome into an outcome group.",
)
_table(
    "outcome_calculation_methods", _id("Canvas global outcome calculation method id."),
    C("context_id", ID), C("context_type"), C("calculation_method"), C("calculation_int", INT),
    C("updated_at", TIME), WS,
    comment="Current outcome calculation method per context.",
)
_table(
    "outcome_proficiencies", _id("Canvas global outcome proficiency id."),
    C("context_id", ID), C("context_type"), C("outcome_proficiency_ratings", JSON, "The mastery scale."),
    C("updated_at", TIME), WS,
    comment="Current outcome proficiency (mastery scale) per context.",
)
_table(
    "rubric_assessments", _id("Canvas global rubric assessment id."),
    C("artifact_id", ID), C("artifact_type", TEXT, "What was assessed, e.g. Submission."),
    C("assessment_type", TEXT, "grading, peer_review or provisional_grade."), C("aligned_to_outcomes", BOOL),
    C("context_uuid"), C("attempt", INT), C("submitted_at", TIME), C("created_at", TIME), C("updated_at", TIME),
    comment="Current state of each rubric assessment.",
)
_table(
    "conversations", _id("Canvas global conversation id."),
    C("updated_at", TIME), C("last_forwarded_at", TIME, "Time of the latest conversation_forwarded event."),
    comment="Conversations (inbox threads).",
)
_table(
    "conversation_messages", _id("Canvas global conversation message id."),
    C("conversation_id", ID), C("author_id", ID), C("created_at", TIME),
    comment="Messages in conversations.",
)
_table(
    "lti_resource_links", _id("Canvas global LTI resource link id."),
    C("resource_link_uuid"), C("lookup_uuid"), C("context_id", ID), C("context_type"),
    C("context_external_tool_id", ID), C("url"), WS,
    comment="Current state of each LTI 1.3 resource link.",
)
_table(
    "content_migrations", _id("Canvas global content migration id."),
    C("context_id", ID), C("context_type"), C("context_uuid"), C("migration_type"),
    C("import_quizzes_next", BOOL), C("lti_context_id"), C("source_course_lti_id"), C("source_course_uuid"),
    C("destination_course_lti_id"), C("domain"),
    C("started_at", TIME, "Time of content_migration_started."),
    C("completed_at", TIME, "Time of content_migration_completed."),
    comment="Content migrations (course copies and imports).",
)
_table(
    "master_migrations", _id("Canvas global blueprint (master) migration id."),
    C("master_template_id", ID), C("account_id", ID), C("account_uuid"), C("blueprint_course_id", ID),
    C("blueprint_course_uuid"), C("started_at", TIME, "Time of master_migration_started."),
    comment="Blueprint course syncs.",
)
_table(
    "sis_batches", _id("Canvas global SIS import id."),
    C("account_id", ID), WS,
    comment="Current state of each SIS import.",
)
_table(
    "scores", _id("Canvas global score id."),
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

# --- facts (one row per event) ---------------------------------------------------------------

_table(
    "grade_changes", [C("event_id", TEXT, "The grade_change event.")],
    C("submission_id", ID), C("assignment_id", ID), C("user_id", ID, "The student."), C("grader_id", ID),
    C("score", FLOAT), C("old_score", FLOAT), C("grade"), C("old_grade"), C("points_possible", FLOAT),
    C("old_points_possible", FLOAT), C("grading_complete", BOOL), C("muted", BOOL), C("event_time", TIME),
    C("student_id", ID, "Same as user_id."), C("student_sis_id"),
    comment="One row per grade_change event (history).",
)
_table(
    "course_grade_changes", _fact(),
    C("course_id", ID), C("user_id", ID, "The student."), C("workflow_state"),
    C("current_score", FLOAT), C("old_current_score", FLOAT), C("final_score", FLOAT), C("old_final_score", FLOAT),
    C("unposted_current_score", FLOAT), C("old_unposted_current_score", FLOAT),
    C("unposted_final_score", FLOAT), C("old_unposted_final_score", FLOAT),
    C("created_at", TIME), C("updated_at", TIME), EVENT_TIME,
    comment="One row per course_grade_change event (history of course scores).",
)
_table(
    "score_changes", _fact(),
    C("score_id", ID), C("enrollment_id", ID), C("user_id", ID), C("course_id", ID), C("grading_period_id", ID),
    C("override_score", FLOAT), C("old_override_score", FLOAT), C("override_status"), C("override_status_id", ID),
    C("old_override_status"), C("old_override_status_id", ID), C("updated_at", TIME), EVENT_TIME,
    comment="One row per grade_override / final_grade_custom_status event (history).",
)
_table(
    "submission_status_changes", _fact(),
    C("submission_id", ID), C("assignment_id", ID), C("user_id", ID), C("course_id", ID),
    C("submission_status"), C("submission_status_id", ID), C("old_submission_status"),
    C("old_submission_status_id", ID), C("updated_at", TIME), EVENT_TIME,
    comment="One row per submission_custom_grade_status event (history).",
)
_table(
    "asset_accesses", _fact(),
    EVENT_TIME, C("user_id", ID, "Who accessed it."),
    C("asset_id", ID), C("asset_type", TEXT, "course, assignment, attachment, quizzes:quiz, ..."),
    C("asset_subtype", TEXT, "Page of a course/group, e.g. files, grades, modules."),
    C("asset_name"), C("category", TEXT, "Canvas page category (canvas format only)."),
    C("role", TEXT, "Enrollment type of the accessing user in the context."), C("level"),
    C("filename"), C("display_name"), C("url", TEXT, "URL of an external tool or link asset."), C("domain"),
    CTX_TYPE, CTX_ID, C("context_account_id", ID), C("http_method"),
    C("request_url", TEXT, "URL of the request (metadata.url / request_url)."),
    C("client_ip"), C("session_id"), C("user_agent"), C("developer_key_id", ID),
    comment="One row per asset_accessed event (page views).",
)
_table(
    "logins", _fact(),
    C("event_name", TEXT, "logged_in or logged_out."), EVENT_TIME, C("user_id", ID),
    C("redirect_url", TEXT, "Where the user was sent after logging in."), C("client_ip"), C("session_id"),
    C("user_agent"), C("hostname"),
    comment="One row per logged_in / logged_out event.",
)
_table(
    "learning_outcome_results", _fact(),
    C("learning_outcome_result_id", ID, "The result id (only in learning_outcome_result_updated)."),
    C("learning_outcome_id", ID), C("user_uuid", TEXT, "uuid of the assessed user."),
    C("learning_outcome_context_uuid"), C("result_context_id", ID), C("result_context_type"),
    C("result_context_uuid"), C("artifact_id", ID), C("artifact_type"), C("artifact_created_at", TIME),
    C("artifact_updated_at", TIME), C("associated_asset_id", ID), C("associated_asset_type"),
    C("attempt", INT), C("score", FLOAT), C("possible", FLOAT), C("percent", FLOAT), C("mastery", BOOL),
    C("original_score", FLOAT), C("original_possible", FLOAT), C("original_mastery", BOOL),
    C("assessed_at", TIME), C("created_at", TIME), C("updated_at", TIME), EVENT_TIME,
    comment="One row per learning outcome result event (the created event carries no result id).",
)
_table(
    "outcome_alignment_clones", _fact(),
    C("original_course_uuid"), C("new_course_uuid"), C("new_course_resource_link_id"), C("domain"),
    C("original_assignment_resource_link_id"), C("new_assignment_resource_link_id"), C("status"), EVENT_TIME,
    comment="One row per outcomes.retry_outcome_alignment_clone event.",
)
_table(
    "conversation_forwards", _fact(),
    C("conversation_id", ID), C("user_id", ID, "Who forwarded it."), C("updated_at", TIME), EVENT_TIME,
    comment="One row per conversation_forwarded event.",
)

# --- the event mapping -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where one event's fields go in one table.

    ``key``: key column -> source. A source is a body key, or ``@event_id``, ``@event_time``,
    ``@event_name``, ``@meta.<key>``. ``rename``: body key -> column (default: same name).
    ``extra``: column -> source, or ``=value`` for a constant. ``ignore``: body keys that are
    known but deliberately not stored in this table (they stay in ``canvas.events.payload``).
    """

    table: str
    key: Mapping[str, str]
    rename: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EventSpec:
    targets: tuple[Target, ...]
    flatten: Mapping[str, str] = field(default_factory=dict)  # nested object key -> prefix


EVENTS: dict[str, EventSpec] = {}


def _ev(names: str, *targets: Target, flatten: Mapping[str, str] | None = None) -> None:
    for name in names.split():
        EVENTS[name] = EventSpec(tuple(targets), dict(flatten or {}))


def T(table: str, key: str | Mapping[str, str], **kw: Any) -> Target:
    keys = {"id": key} if isinstance(key, str) else dict(key)
    if "ignore" in kw:
        kw["ignore"] = frozenset(kw["ignore"].split() if isinstance(kw["ignore"], str) else kw["ignore"])
    return Target(table, keys, **kw)


FACT = {"event_id": "@event_id"}
DELETED = {"workflow_state": "=deleted"}

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
    T("grade_changes", FACT, extra={"event_time": "@event_time"}))
_ev("submission_custom_grade_status",
    T("submissions", "submission_id", ignore="old_submission_status old_submission_status_id"),
    T("submission_status_changes", FACT, extra={"event_time": "@event_time"}))
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
    T("learning_outcome_results", FACT, rename={"id": "learning_outcome_result_id"},
      extra={"event_time": "@event_time"}))
_ev("outcome_calculation_method_created outcome_calculation_method_updated",
    T("outcome_calculation_methods", "outcome_calculation_method_id"))
_ev("outcome_proficiency_created outcome_proficiency_updated",
    T("outcome_proficiencies", "outcome_proficiency_id"))
_ev("outcomes.retry_outcome_alignment_clone",
    T("outcome_alignment_clones", FACT, extra={"event_time": "@event_time"}))
_ev("rubric_assessed", T("rubric_assessments", "id"))
_ev("conversation_created", T("conversations", "conversation_id"))
_ev("conversation_forwarded",
    T("conversations", "conversation_id", extra={"last_forwarded_at": "@event_time"}),
    T("conversation_forwards", FACT, extra={"user_id": "@meta.user_id", "event_time": "@event_time"}))
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
    T("score_changes", FACT, extra={"event_time": "@event_time"}))
_ev("course_grade_change",
    T("course_scores", {"course_id": "course_id", "user_id": "user_id"},
      ignore="old_current_score old_final_score old_unposted_current_score old_unposted_final_score"),
    T("course_grade_changes", FACT, extra={"event_time": "@event_time"}))
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
_ev("asset_accessed", T("asset_accesses", FACT, extra=_META_ACCESS))
_ev("logged_in logged_out",
    T("logins", FACT, extra={
        "event_name": "@event_name", "event_time": "@event_time", "user_id": "@meta.user_id",
        "client_ip": "@meta.client_ip", "session_id": "@meta.session_id", "user_agent": "@meta.user_agent",
        "hostname": "@meta.hostname",
    }))


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
    """Table name -> sorted event names whose mapping writes to it."""
    out: dict[str, set[str]] = {name: set() for name in TABLE_SPECS}
    for event, spec in EVENTS.items():
        for target in spec.targets:
            out[target.table].add(event)
    return {name: sorted(events) for name, events in out.items()}


# --- coercion and application ----------------------------------------------------------------


class _Invalid(Exception):
    pass


def coerce(kind: str, value: Any) -> Any:
    """A JSON value to the Python value of a column kind; raises _Invalid."""
    if value is None:
        return None
    try:
        if kind == ID:
            ident = to_id(value)
            if ident is not None and not -(2**63) <= ident < 2**63:
                raise _Invalid("id out of bigint range")
            return ident
        if kind == TIME:
            return parse_time(value)
    except NormalizationError as exc:
        raise _Invalid(str(exc)) from exc
    if kind == BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Invalid("not a boolean")
    if kind in (FLOAT, INT):
        if isinstance(value, bool):
            raise _Invalid("boolean for a number")
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise _Invalid("not a number") from exc
        if not isinstance(number, int | float):
            raise _Invalid("not a number")
        if kind == FLOAT:
            return float(number)
        if float(number).is_integer() and -(2**63) <= number < 2**63:
            return int(number)
        raise _Invalid("not an integer")
    if kind == TEXT:
        if isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if kind == JSON:
        return value
    raise _Invalid(f"unknown kind {kind}")


@dataclass(slots=True)
class Applied:
    changes: list[RowChange]
    unknown_fields: list[str]


def flatten_body(body: Mapping[str, Any], flatten: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in flatten and isinstance(value, Mapping):
            for sub, subvalue in value.items():
                out[f"{flatten[key]}{sub}"] = subvalue
        else:
            out[key] = value
    return out


def apply_mapping(
    event_name: str,
    meta: Mapping[str, Any],
    body: Mapping[str, Any],
    *,
    event_id: str,
    event_time: datetime | None,
    label: str | None = None,
) -> Applied | None:
    """Row changes for one event; None when the event name has no mapping.

    ``label`` names the event in ``unknown_fields`` entries (defaults to the mapping's name).
    """
    spec = EVENTS.get(event_name)
    if spec is None:
        return None
    label = label or event_name
    version = make_version(event_time, event_id)
    flat = flatten_body(body, spec.flatten)
    known: set[str] = set()
    problems: list[str] = []
    changes: list[RowChange] = []

    def source(src: str) -> tuple[bool, Any]:
        if src.startswith("="):
            return True, src[1:]
        if src == "@event_id":
            return True, event_id
        if src == "@event_time":
            return True, event_time
        if src == "@event_name":
            return True, event_name
        if src.startswith("@meta."):
            key = src[len("@meta."):]
            return key in meta, meta.get(key)
        known.add(src)
        return src in flat, flat.get(src)

    for target in spec.targets:
        table = TABLE_SPECS[target.table]
        kinds = table.kinds
        key: dict[str, Any] = {}
        for column, src in target.key.items():
            present, raw = source(src)
            try:
                value = coerce(kinds[column], raw) if present else None
            except _Invalid:
                value = None
            if value is None:
                problems.append(f"{label}.{src}:missing_key")
                key = {}
                break
            key[column] = value
        key_sources = set(target.key.values())
        fields: dict[str, Any] = {}
        for raw_key, raw in flat.items():
            if raw_key in key_sources:
                continue
            if raw_key in target.ignore:
                known.add(raw_key)
                continue
            column = target.rename.get(raw_key, raw_key)
            if column not in table.column_names:
                continue
            known.add(raw_key)
            try:
                fields[column] = coerce(kinds[column], raw)
            except _Invalid:
                problems.append(f"{label}.{raw_key}:invalid")
        for column, src in target.extra.items():
            present, raw = source(src)
            if not present:
                continue
            try:
                fields[column] = coerce(kinds[column], raw)
            except _Invalid:
                problems.append(f"{label}.{src}:invalid")
        if key:
            changes.append(RowChange(table=target.table, key=key, fields=fields, version=version))
    unknown = [f"{label}.{k}" for k in flat if k not in known]
    return Applied(changes=changes, unknown_fields=unknown + problems)
