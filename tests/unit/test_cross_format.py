"""Canvas and Caliper examples of the same event type produce the same row changes.

For every event type documented in both formats, the Canvas example and the Caliper example
must land in the same tables, and agree on every column both carry. Canvas's docs do not always
describe the same object in the two formats; where they do not, the columns that differ are listed
below, with the reason, and the test asserts that exactly those differ (so a regression in a
column that should agree is still caught). Nothing is skipped silently.
"""

from __future__ import annotations

import pytest

from processors.normalize import IdPolicy, normalize
from processors.normalize.model import Normalized, RowChange
from tests.support.corpus import documented_event_names, load_examples

IDS = IdPolicy()

EXAMPLES = load_examples()
BOTH = sorted((documented_event_names("canvas") & documented_event_names("caliper")) - {"asset_accessed"})
SHARD_FACTOR = 10**13  # a global id is shard * 10**13 + local id
# Fact rows are keyed by the happening, which both deliveries of one happening share; the delivery
# they name (event_id) differs by nature.
DELIVERY_COLUMNS = {"event_id"}

DIFFERENT_OBJECT = "the two docs describe different objects (different ids)"

# event -> (does the key differ?, {column: reason}) for the documented disagreements.
EXCEPTIONS: dict[str, tuple[bool, dict[str, str]]] = {
    "assignment_override_created": (True, dict.fromkeys(
        ["all_day", "all_day_date", "assignment_id", "due_at", "lock_at", "type", "unlock_at"], DIFFERENT_OBJECT)),
    "assignment_override_updated": (True, dict.fromkeys(
        ["all_day", "all_day_date", "assignment_id", "due_at", "lock_at", "type", "unlock_at"], DIFFERENT_OBJECT)),
    # Canvas's course_updated example uses course 12340000000056, Caliper's 21070000000000056; the
    # values they carry (name, workflow_state) agree.
    "course_updated": (True, {}),
    "discussion_topic_created": (True, dict.fromkeys(["context_id", "is_announcement", "title"], DIFFERENT_OBJECT)),
    "enrollment_state_updated": (True, {"state": DIFFERENT_OBJECT}),
    "enrollment_updated": (True, dict.fromkeys(
        ["course_section_id", "created_at", "updated_at", "user_id", "user_name"], DIFFERENT_OBJECT)),
    "submission_updated": (True, dict.fromkeys(
        ["assignment_id", "submission_type", "updated_at", "user_id"], DIFFERENT_OBJECT)),
    # Different objects, and Caliper's dateCreated/dateModified are truncated to whole seconds.
    "user_account_association_created": (True, dict.fromkeys(["created_at", "updated_at"], DIFFERENT_OBJECT)),
    "wiki_page_created": (True, dict.fromkeys(["body", "title"], DIFFERENT_OBJECT)),
    "wiki_page_updated": (True, dict.fromkeys(["body", "title"], DIFFERENT_OBJECT)),
}

# Same object, same user, but the Canvas body gives the local id (98765) where Caliper gives the
# global one (21070000000098765): both are stored as the one id of that user (see ids.py).
ONE_ID_TWO_FORMS: dict[str, str] = {"discussion_entry_created": "user_id"}

# Event-row attributes (actor, context) that disagree in the docs' examples, and why.
EVENT_ROW_EXCEPTIONS: dict[str, dict[str, str]] = {
    # The Canvas examples of these come from background jobs or omit the actor / context.
    "assignment_override_created": {"event_time": "different examples", "context_id": "different examples"},
    "attachment_created": {"user_id": "Canvas example has no actor", "context_type": "Canvas example has no context",
                           "context_id": "Canvas example has no context"},
    "attachment_deleted": {"context_type": "Canvas example has no context",
                           "context_id": "Canvas example has no context"},
    "attachment_updated": {"context_type": "Canvas example has no context",
                           "context_id": "Canvas example has no context"},
    "course_updated": {"user_id": "Canvas example has no actor", "event_time": "different examples"},
    "discussion_topic_created": {"user_id": "Canvas example has no actor", "context_type": "no Canvas context",
                                 "context_id": "no Canvas context", "event_time": "different examples"},
    "enrollment_state_updated": {"user_id": "different examples", "context_type": "no Canvas context",
                                 "context_id": "no Canvas context", "event_time": "different examples"},
    "enrollment_updated": {"user_id": "Canvas example has no actor", "context_type": "no Canvas context",
                           "context_id": "no Canvas context", "event_time": "different examples"},
    "group_created": {"context_type": "no Canvas context", "context_id": "no Canvas context"},
    "submission_created": {"user_id": "Canvas example has no actor"},
    "submission_updated": {"user_id": "different examples", "event_time": "different examples"},
    "user_account_association_created": {"user_id": "different examples", "event_time": "different examples"},
    "wiki_page_created": {"user_id": "different examples", "context_type": "no Canvas context",
                          "context_id": "no Canvas context", "event_time": "different examples"},
    "wiki_page_updated": {"user_id": "different examples", "context_type": "no Canvas context",
                          "context_id": "no Canvas context", "event_time": "different examples"},
}


def _first(fmt: str, name: str) -> Normalized:
    example = next(e for e in EXAMPLES if e.format == fmt and e.doc == name)
    return normalize(example.record(), IDS)


def _by_table(out: Normalized) -> dict[str, RowChange]:
    tables = [c.table for c in out.changes]
    assert len(tables) == len(set(tables))
    return {c.table: c for c in out.changes}


def _differences(name: str, canvas: RowChange, caliper: RowChange) -> tuple[bool, dict[str, tuple]]:
    key_differs = dict(canvas.key) != dict(caliper.key)
    diffs = {}
    for column in sorted(set(canvas.fields) & set(caliper.fields) - DELIVERY_COLUMNS):
        a, b = canvas.fields[column], caliper.fields[column]
        if a != b:
            diffs[column] = (a, b)
    return key_differs, diffs


@pytest.mark.parametrize("name", BOTH)
def test_same_tables_and_shared_columns_agree(name: str):
    canvas, caliper = _by_table(_first("canvas", name)), _by_table(_first("caliper", name))
    assert set(canvas) == set(caliper), name
    key_expected, columns_expected = EXCEPTIONS.get(name, (False, {}))
    for table in canvas:
        key_differs, diffs = _differences(name, canvas[table], caliper[table])
        assert key_differs == key_expected, (table, canvas[table].key, caliper[table].key)
        assert set(diffs) == set(columns_expected), (table, diffs)
        # Something is actually compared for every pair (apart from pure facts like logged_out).
        shared = set(canvas[table].fields) & set(caliper[table].fields)
        assert shared, (name, table)


@pytest.mark.parametrize(("name", "column"), ONE_ID_TWO_FORMS.items())
def test_an_id_written_in_two_forms_is_stored_once(name: str, column: str):
    canvas = next(e for e in EXAMPLES if e.format == "canvas" and e.doc == name).payload["body"][column]
    caliper = next(e for e in EXAMPLES if e.format == "caliper" and e.doc == name).payload["data"][0]["actor"]["id"]
    assert int(canvas) < SHARD_FACTOR < int(caliper.rsplit(":", 1)[1])  # local in one, global in the other
    [a], [b] = _first("canvas", name).changes, _first("caliper", name).changes
    assert a.fields[column] == b.fields[column] == int(canvas)


@pytest.mark.parametrize("name", BOTH)
def test_event_rows_agree(name: str):
    a, b = _first("canvas", name).events[0], _first("caliper", name).events[0]
    assert a.event_name == b.event_name == name
    expected = EVENT_ROW_EXCEPTIONS.get(name, {})
    for attribute in ("event_time", "user_id", "context_type", "context_id"):
        same = getattr(a, attribute) == getattr(b, attribute)
        assert same != (attribute in expected), (attribute, getattr(a, attribute), getattr(b, attribute))


def test_caliper_never_carries_a_column_the_canvas_mapping_lacks():
    """Caliper-only columns exist (e.g. created_at from dateCreated), but every one is a real column of
    the same table, and Caliper carries at most the Canvas body's fields plus those."""
    for name in BOTH:
        canvas, caliper = _by_table(_first("canvas", name)), _by_table(_first("caliper", name))
        for table, change in caliper.items():
            extra = set(change.fields) - set(canvas[table].fields)
            assert extra <= {"created_at", "updated_at", "context_id", "context_type", "course_id",
                             "state_started_at", "session_id", "student_id"}, (name, table, extra)


def _asset_key(change: RowChange) -> tuple:
    return (change.fields.get("asset_type"), change.fields.get("asset_subtype"), change.fields.get("asset_id"))


def test_asset_accessed_pairs_agree():
    """The 40 asset_accessed examples come in a different order in the two docs: pair them by
    (asset_type, asset_subtype, asset_id) and compare the columns both carry."""
    def changes(fmt: str) -> list[RowChange]:
        return [normalize(e.record(), IDS).changes[0]
                for e in EXAMPLES if e.format == fmt and e.doc == "asset_accessed"]

    canvas, caliper = changes("canvas"), changes("caliper")
    assert len(canvas) == len(caliper) == 40
    by_key: dict[tuple, list[RowChange]] = {}
    for change in canvas:
        by_key.setdefault(_asset_key(change), []).append(change)
    paired = 0
    for change in caliper:
        candidates = by_key.get(_asset_key(change), [])
        if not candidates:
            continue
        # Columns that identify what was accessed agree for at least one same-key Canvas example.
        comparable = ("asset_type", "asset_subtype", "asset_id", "asset_name", "user_id", "http_method",
                      "context_account_id", "developer_key_id", "filename", "display_name", "url", "domain")
        assert any(
            all(c.fields.get(k) == change.fields.get(k) for k in comparable if k in c.fields and k in change.fields)
            for c in candidates
        ), _asset_key(change)
        paired += 1
    assert paired == 40, paired
