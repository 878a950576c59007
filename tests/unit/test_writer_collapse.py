"""The writer's in-batch merge: per column, the latest version wins, whatever the order of the changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.normalize.model import RowChange, make_version
from processors.warehouse.writer import UnknownColumn, collapse, upsert_changes

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def change(key: int, fields: dict, seconds: float, event_id: str, table: str = "courses") -> RowChange:
    return RowChange(table=table, key={"id": key}, fields=fields,
                     version=make_version(T0 + timedelta(seconds=seconds), event_id))


def merged(changes: list[RowChange]) -> dict:
    """collapse() as a comparable value: (table, key) -> (fields, versions)."""
    out = {}
    for row in collapse(changes):
        index = (row.table, tuple(sorted(row.key.items())))
        assert index not in out, "one merged row per (table, key)"
        out[index] = (row.fields, row.versions)
    return out


def test_each_column_takes_the_value_of_the_latest_event_that_carried_it():
    old = change(1, {"name": "Old", "course_code": "A1"}, 0, "e1")
    new = change(1, {"name": "New", "workflow_state": "available"}, 10, "e2")
    for order in ([old, new], [new, old]):
        [row] = collapse(order)
        assert row.fields == {"name": "New", "course_code": "A1", "workflow_state": "available"}
        assert row.versions == {"name": new.version, "course_code": old.version, "workflow_state": new.version}


def test_a_null_from_a_later_event_wins_and_an_older_value_does_not():
    later_null = change(1, {"name": None}, 10, "e2")
    older = change(1, {"name": "Stale"}, 5, "e1")
    [row] = collapse([later_null, older])
    assert row.fields == {"name": None}
    assert row.versions == {"name": later_null.version}


def test_ties_in_event_time_are_broken_by_event_id():
    a = change(1, {"name": "from a"}, 0, "aaaa")
    b = change(1, {"name": "from b"}, 0, "bbbb")
    for order in ([a, b], [b, a]):
        [row] = collapse(order)
        assert row.fields == {"name": "from b"}
        assert row.versions["name"] == b.version


def test_rows_are_told_apart_by_table_and_key_whatever_the_key_order():
    one = RowChange("course_scores", {"course_id": 1, "user_id": 2}, {"current_score": 1.0}, make_version(T0, "e1"))
    same = RowChange("course_scores", {"user_id": 2, "course_id": 1}, {"final_score": 2.0}, make_version(T0, "e2"))
    other_key = change(1, {"name": "x"}, 0, "e3")
    other_table = change(1, {"name": "x"}, 0, "e4", table="users")
    rows = merged([one, same, other_key, other_table])
    assert set(rows) == {("course_scores", (("course_id", 1), ("user_id", 2))), ("courses", (("id", 1),)),
                         ("users", (("id", 1),))}
    assert rows[("course_scores", (("course_id", 1), ("user_id", 2)))][0] == {"current_score": 1.0, "final_score": 2.0}


def test_a_repeated_delivery_changes_nothing():
    first = change(1, {"name": "A"}, 0, "e1")
    assert merged([first]) == merged([first, first, first])


CHANGES = st.lists(
    st.builds(
        change,
        key=st.integers(1, 3),
        fields=st.dictionaries(st.sampled_from(["name", "course_code", "workflow_state"]),
                               st.none() | st.text(max_size=3), max_size=3),
        seconds=st.integers(0, 3),
        event_id=st.sampled_from(["e1", "e2", "e3", "e4"]),
    ),
    max_size=12,
)


@given(changes=CHANGES, data=st.data())
def test_the_result_does_not_depend_on_the_order_of_the_changes(changes, data):
    # One event carries one value per column: same version, same value (as normalizers guarantee).
    by_version = {}
    changes = [RowChange(c.table, c.key, {k: by_version.setdefault((c.version, c.key["id"], k), v)
                                          for k, v in c.fields.items()}, c.version) for c in changes]
    shuffled = data.draw(st.permutations(changes))
    assert merged(shuffled) == merged(changes)
    for (_, key), (fields, versions) in merged(changes).items():
        for column, version in versions.items():
            carried = [c.version for c in changes if c.key["id"] == key[0][1] and column in c.fields]
            assert version == max(carried)
            assert fields[column] == by_version[(version, key[0][1], column)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (RowChange("courses", {"id": 1}, {"no_such_column": 1}, make_version(T0, "e1")), "no_such_column"),
        (RowChange("courses", {"course_id": 1}, {}, make_version(T0, "e1")), "course_id"),
        (RowChange("no_such_table", {"id": 1}, {}, make_version(T0, "e1")), "unknown table"),
    ],
)
def test_a_change_that_does_not_fit_the_table_is_refused_before_any_sql(bad, message):
    """A normalizer bug surfaces as UnknownColumn (a ValueError: the sink quarantines the message)."""
    with pytest.raises(UnknownColumn, match=message):
        asyncio.run(upsert_changes(None, [bad]))  # type: ignore[arg-type]  # refused before the connection is used
