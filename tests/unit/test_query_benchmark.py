"""Pure parts of the query benchmark: the queries collected from the documents, their example ids
replaced, the verdict on a plan (partitions of ``events`` included), and the fill's proportions."""

from __future__ import annotations

import pytest

from benchmarks.fill import plan
from benchmarks.queries import documented_queries, seq_scans, substitute, top_nodes, watched
from processors.warehouse.schema import SCHEMA as S


def test_every_sql_block_of_the_documents_is_collected():
    found = documented_queries()
    sources = {q.source for q in found}
    assert sources == {"README.md", "analysts.md", "warehouse.md"}
    assert len([q for q in found if q.source == "README.md"]) == 5
    assert all(q.sql.lstrip().upper().startswith(("SELECT", "WITH")) and "--" not in q.sql.splitlines()[0]
               for q in found)
    titles = {q.title for q in found}
    assert "Grade history of one submission, newest first" in titles  # a block's comment is its title
    assert not any(q.sql.lstrip().upper().startswith(("CREATE", "GRANT", "ALTER")) for q in found)


def test_the_examples_ids_are_replaced_by_the_column_they_filter():
    ids = {"course": 7, "section": 13, "submission": 99, "student": 1234}
    sql = ("SELECT 1 FROM t a WHERE a.course_id = 565 AND e.course_section_id = 77 AND submission_id = 11086 "
           "AND s.user_id = 48 AND v.context_id = 565 AND points = 565 AND a.id = s.assignment_id")
    assert substitute(sql, ids) == (
        "SELECT 1 FROM t a WHERE a.course_id = 7 AND e.course_section_id = 13 AND submission_id = 99 "
        "AND s.user_id = 1234 AND v.context_id = 7 AND points = 565 AND a.id = s.assignment_id")


def scan(relation: str, schema: str = S, parallel: bool = False) -> dict:
    return {"Node Type": "Seq Scan", "Relation Name": relation, "Schema": schema, "Parallel Aware": parallel}


def test_a_seq_scan_of_events_or_a_partition_of_it_is_flagged_wherever_it_is_in_the_plan():
    plan_ = {"Node Type": "Aggregate", "Plans": [{"Node Type": "Append", "Plans": [
        scan("events_2026_11", parallel=True), {"Node Type": "Index Scan", "Relation Name": "events_2026_12",
                                                "Schema": S, "Index Name": "events_2026_12_user_idx"}]}]}
    assert seq_scans(plan_) == ["events_2026_11"]
    assert seq_scans({"Node Type": "Hash Join", "Plans": [scan("events"), scan("users")]}) == ["events"]
    assert seq_scans(scan("events", schema="canvas")) == []  # Canvas Data 2's tables are not ours to index
    assert seq_scans(scan("eventsx")) == []


def test_a_fact_table_scan_is_flagged_only_when_the_table_is_large():
    assert seq_scans(scan("asset_accesses")) == []
    assert seq_scans(scan("asset_accesses"), is_watched=lambda n: watched(n, frozenset({"asset_accesses"}))) \
        == ["asset_accesses"]


@pytest.mark.parametrize("events", [5_000, 20_000, 3_000_000])
def test_the_fill_plan_adds_up_to_the_events_asked_and_is_mostly_page_views(events):
    shape = plan(events)
    assert sum(shape.counts().values()) == events
    assert shape.page_views > events * 0.7
    assert shape.submissions <= 12 * shape.student_enrollments  # one per enrollment and assignment at most


def test_the_fill_refuses_too_few_events():
    with pytest.raises(ValueError, match="too few"):
        plan(1_000)


def test_the_plan_summary_shows_the_first_levels_and_every_scan_below_them():
    leaf = {"Node Type": "Bitmap Index Scan", "Index Name": "asset_accesses_context_idx", "Actual Rows": 4,
            "Actual Loops": 3, "Actual Total Time": 0.02}
    deep = {"Node Type": "Bitmap Heap Scan", "Relation Name": "asset_accesses", "Schema": S, "Plans": [leaf]}
    cd2 = {"Node Type": "Seq Scan", "Relation Name": "users", "Schema": "canvas"}
    plan_ = {"Node Type": "Sort", "Plans": [{"Node Type": "Aggregate", "Plans": [{"Node Type": "Sort", "Plans": [
        {"Node Type": "Nested Loop", "Plans": [{"Node Type": "Memoize", "Plans": [deep]}, cd2]}]}]}]}
    lines = top_nodes(plan_)
    assert "Memoize" not in " ".join(lines)  # below the first four levels, only scans
    assert "            Bitmap Index Scan using asset_accesses_context_idx (rows 12, 0.0 ms, 3 loops)" in lines
    assert "        Seq Scan on canvas.users" in lines
