"""The warehouse schema is declared once: the event map, the normalizers and the SQLAlchemy tables agree with it."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from canvas_stream.records import SOURCE_LTI_NOTICE, Record, Verification
from processors.normalize import IdPolicy, normalize
from processors.normalize.apply import COMPILED, MappingError, compile_target
from processors.normalize.event_map import (
    EVENTS,
    BodyField,
    Constant,
    EventValue,
    MetaField,
    T,
    parse_source,
)
from processors.normalize.notices import CLAIM, FORMAT_LTI_NOTICE
from processors.warehouse import schema, tables
from processors.warehouse.schema import TABLE_SPECS, Kind

IDS = IdPolicy()

TARGETS = [(name, target) for name, spec in EVENTS.items() for target in spec.targets]


def _id(item: tuple[str, object]) -> str:
    return f"{item[0]}->{item[1].table}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("item", TARGETS, ids=_id)
def test_every_event_map_target_names_existing_columns_with_known_kinds(item):
    _, target = item
    spec = TABLE_SPECS[target.table]
    assert spec.versioned, "the writer only upserts versioned tables"
    assert set(target.key) == {c.name for c in spec.keys}
    for column in (*target.rename.values(), *target.extra):
        assert column in spec.data_columns, column
    for column in (*target.key, *target.rename.values(), *target.extra):
        assert isinstance(spec.kinds[column], Kind)


def test_every_mapped_event_is_compiled_and_every_mapped_table_is_fed():
    assert set(COMPILED) == set(EVENTS)
    fed = {target.table for _, target in TARGETS}
    derived = {name for name, spec in TABLE_SPECS.items() if spec.fed_by is None}
    assert derived == fed, "a table without an explicit feeder must be fed by the event map"


def test_the_kind_enum_covers_every_column_and_has_one_sql_type_each():
    used = {c.kind for spec in TABLE_SPECS.values() for c in spec.all_columns()}
    assert all(isinstance(kind, Kind) for kind in used)
    assert used == set(Kind), "every kind is used by some column"
    assert set(tables._SQL_TYPES) == set(Kind)


def test_the_schema_declares_every_table_including_events_quarantine_and_lti():
    assert set(TABLE_SPECS) == set(tables.TABLES) == {t.name for t in tables.metadata.sorted_tables}
    assert {"events", "quarantine", "lti_notices", "context_copies", "asset_processor_submissions",
            "lti_deployments"} <= set(TABLE_SPECS)
    unversioned = {name for name, spec in TABLE_SPECS.items() if not spec.versioned}
    assert unversioned == {"events", "quarantine", "ingress_answers", "lti_nonces", "lti_handler_subscriptions",
                           "retention_runs", "erasures", "erased_users"}


@pytest.mark.parametrize("name", sorted(TABLE_SPECS))
def test_sqlalchemy_tables_are_built_from_the_schema(name):
    spec, table = TABLE_SPECS[name], tables.TABLES[name]
    assert [c.name for c in table.c] == [c.name for c in spec.all_columns()]
    assert [c.name for c in table.primary_key.columns] == [c.name for c in spec.keys]
    for col in spec.all_columns():
        column = table.c[col.name]
        assert column.comment == col.comment
        assert column.nullable == (col.nullable and col not in spec.keys)
        assert (column.server_default is None) == (col.server_default is None)
    assert {i.name: [c.name for c in i.columns] for i in table.indexes} == {
        i.name: list(i.columns) for i in spec.indexes}
    assert table.comment == spec.comment
    assert table.info["fed_by"]
    if spec.versioned:
        assert [c.name for c in table.c][-2:] == list(tables.VERSION_COLUMNS)


def test_field_sources_are_parsed_into_typed_objects():
    assert parse_source("score") == BodyField("score")
    assert parse_source("@meta.user_id") == MetaField("user_id")
    assert parse_source("=deleted") == Constant("deleted")
    assert parse_source("@event_id") is EventValue.EVENT_ID
    assert parse_source("@event_time") is EventValue.EVENT_TIME
    assert parse_source("@event_name") is EventValue.EVENT_NAME
    assert parse_source("@happening_id") is EventValue.HAPPENING_ID
    for text in ("score", "@meta.url", "=deleted", "@event_id", "@happening_id", "@event_time", "@event_name"):
        assert str(parse_source(text)) == text
    with pytest.raises(ValueError, match="unknown field source"):
        parse_source("@event_tyme")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (T("no_such_table", "x_id"), "not a versioned warehouse table"),
        (T("events", {"event_id": "@event_id"}), "not a versioned warehouse table"),
        (T("courses", {"course_id": "course_id"}), "is not the table key"),
        (T("courses", "course_id", rename={"nam": "titel"}), "no data column 'titel'"),
        (T("courses", "course_id", extra={"colour": "@event_time"}), "no data column 'colour'"),
        (T("courses", "course_id", extra={"id": "@event_time"}), "no data column 'id'"),
        (T("courses", "course_id", extra={"field_versions": "=x"}), "no data column 'field_versions'"),
        (T("courses", {"id": "=1"}), "a key cannot be a constant"),
        (T("courses", "course_id", extra={"name": "@happening_id"}), "the happening id can only be a key"),
        (T("courses", "course_id", extra={"created_at": "=yesterday"}), "constant 'yesterday'"),
    ],
)
def test_a_mapping_bug_fails_when_compiled(target, message):
    with pytest.raises(MappingError, match=message):
        compile_target(target)


# --- the LTI normalizer writes its rows by hand: they must fit the schema too ----------------

CONTEXT = {"id": "ctx-lti-id", "label": "BIO-2", "title": "Biology 2",
           "type": ["http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"]}
NOTICES = {
    "LtiHelloWorldNotice": {},
    "LtiContextCopyNotice": {CLAIM + "context": CONTEXT, CLAIM + "origin_contexts": ["origin-ctx"]},
    "LtiAssetProcessorSubmissionNotice": {
        "sub": "user-sub", CLAIM + "context": CONTEXT,
        CLAIM + "for_user": {"user_id": "student"}, CLAIM + "activity": {"id": "activity"},
        CLAIM + "submission": {"id": "submission:1"},
        CLAIM + "assetreport": {"report_url": "https://canvas.example/reports"},
        CLAIM + "assetservice": {"assets": [{"asset_id": "a1", "size": 15}]},
    },
    "SomeFutureNotice": {},
}


def _notice(ntype: str) -> Record:
    claims = {
        CLAIM + "notice": {"id": f"id-{ntype}", "timestamp": "2025-03-19T11:24:25Z", "type": ntype},
        CLAIM + "deployment_id": "1:abc", "aud": "client", "azp": "client", "iat": 1742383465,
        "iss": "https://canvas.instructure.com", **NOTICES[ntype],
    }
    return Record(source=SOURCE_LTI_NOTICE, format=FORMAT_LTI_NOTICE, received_at="2025-03-19T11:24:26+00:00",
                  payload=claims, verification=Verification(signed=True, kid="kid-1"), raw="h.p.s")


KIND_TYPES = {Kind.TEXT: str, Kind.TIME: datetime, Kind.JSON: (dict, list), Kind.ID: int}


@pytest.mark.parametrize("ntype", sorted(NOTICES))
def test_lti_notice_changes_name_schema_columns_of_the_right_kind(ntype):
    out = normalize(_notice(ntype), IDS)
    expected = {"lti_notices", "lti_deployments"} | {
        "LtiContextCopyNotice": {"context_copies"},
        "LtiAssetProcessorSubmissionNotice": {"asset_processor_submissions"},
    }.get(ntype, set())
    assert {c.table for c in out.changes} == expected
    for change in out.changes:
        spec = TABLE_SPECS[change.table]
        assert spec.fed_by is not None and spec.versioned
        assert set(change.key) == {c.name for c in spec.keys}
        assert set(change.fields) <= spec.data_columns
        for column, value in {**change.key, **change.fields}.items():
            assert value is None or isinstance(value, KIND_TYPES[spec.kinds[column]]), (column, value)
    assert schema.VERSION_COLUMN_NAMES.isdisjoint(f for c in out.changes for f in c.fields)


# Columns whose names say they may hold personal data, and the few that do not despite the name.
PERSONAL_NAMES = re.compile(r"(^|_)(user_id|user_ids|grader_id|author_id|student_id|login|email|client_ip|user_agent|"
                            r"session_id|user_uuid|user_sub|sis_id|user_name|payload|raw|jwt|claims|body|text|url)$")
NOT_PERSONAL = {("lti_resource_links", "url"), ("asset_processor_submissions", "report_url"),
                ("lti_handler_subscriptions", "pns_url")}  # tool endpoints, not people


def test_the_register_marks_every_column_that_may_hold_personal_data():
    """A new column named like a person's data must be placed in the register (schema._personal):
    erasure, pseudonymization and the data dictionary read it."""
    unmarked = {(name, c.name) for name, spec in TABLE_SPECS.items() for c in spec.all_columns()
                if PERSONAL_NAMES.search(c.name) and c.personal is None}
    assert unmarked == NOT_PERSONAL
    for spec in TABLE_SPECS.values():
        for col in spec.all_columns():
            if col.person is not None and col.person.when is not None:
                assert col.person.when[0] in spec.kinds, (spec.name, col.name)
            if col.owned_by is not None:
                assert col.owned_by.table in TABLE_SPECS and "id" in TABLE_SPECS[col.owned_by.table].kinds
