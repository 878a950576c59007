"""The analysts' queries on a warehouse of a few million events: time, rows, plan, and a verdict.

``DATABASE_URL=postgresql://... python -m benchmarks.queries [--events 3000000] [--months 6] [--json out.json]``

Creates a throwaway database on the server, migrates it with the project's migrations, fills it
(``benchmarks/fill.py``) and drops it at the end; ``--database-url`` runs on a warehouse that is
already filled instead (nothing is created or dropped). Every example query of README.md,
docs/analysts.md and the data dictionary (its header's example and the worked Canvas Data 2 joins,
against CD2 tables made the way ``dap initdb`` makes them and filled from the live tables), and
every analyst view, is collected from the documents themselves (so the benchmark never drifts from
them), its example ids replaced by ids of the filled data (:func:`substitute`), and run with
``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` after a warm-up run.

Verdict (:func:`seq_scans`, pure): a plan fails when it reads ``events`` (or a partition of it:
``events_*``) or a large fact table with a sequential scan. A failing plan is planned again with
``enable_seqscan = off`` to tell the two cases apart: an index exists that serves it (the planner
preferred the scan) or none does (add one). Exit status 1 when any plan fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from canvas_stream import datadict
from canvas_stream.settings import DEFAULT_WAREHOUSE_SCHEMA, async_database_url
from processors.warehouse.partitions import parent_of
from processors.warehouse.schema import LEGACY_SCHEMA as CD2
from processors.warehouse.schema import SCHEMA, TABLE_SPECS
from tests.support.warehouse import warehouse_at

from .fill import fill_warehouse

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "analysts.md")
S = SCHEMA
# History tables whose sequential scan fails a plan once they hold this many rows (events: always).
LARGE_ROWS = 100_000
FACT_TABLES = frozenset(name for name, spec in TABLE_SPECS.items() if spec.keys[0].name == "happening_id")

# Canvas Data 2's tables as ``dap initdb`` creates them (schema ``canvas``, CD2's names, key ``id``,
# no other index): the worked examples of docs/warehouse.md join them.
CD2_SCHEMA = f"""
CREATE SCHEMA {CD2};
CREATE TYPE {CD2}.submissions__workflow_state AS ENUM ('submitted', 'unsubmitted', 'graded', 'pending_review',
                                                       'deleted');
CREATE TABLE {CD2}.courses (id bigint PRIMARY KEY, name varchar(255), course_code varchar(255),
    workflow_state varchar(255), account_id bigint, root_account_id bigint, enrollment_term_id bigint,
    created_at timestamp, updated_at timestamp);
CREATE TABLE {CD2}.users (id bigint PRIMARY KEY, name varchar(255), sortable_name varchar(255),
    workflow_state varchar(255), created_at timestamp, updated_at timestamp);
CREATE TABLE {CD2}.enrollments (id bigint PRIMARY KEY, user_id bigint, course_id bigint, course_section_id bigint,
    type varchar(255), workflow_state varchar(255), role_id bigint, created_at timestamp, updated_at timestamp);
CREATE TABLE {CD2}.assignments (id bigint PRIMARY KEY, title varchar(255), context_id bigint,
    context_type varchar(255), points_possible double precision, due_at timestamp, workflow_state varchar(255),
    created_at timestamp, updated_at timestamp);
CREATE TABLE {CD2}.submissions (id bigint PRIMARY KEY, assignment_id bigint, user_id bigint, course_id bigint,
    score double precision, grade varchar(255), workflow_state {CD2}.submissions__workflow_state,
    submitted_at timestamp, graded_at timestamp, created_at timestamp, updated_at timestamp)
"""

# CD2's copy of the live tables, as of a nightly sync a day ago (so live rows may be newer).
CD2_COPY = f"""
INSERT INTO {CD2}.courses SELECT id, name, course_code, workflow_state, account_id, root_account_id,
    enrollment_term_id, created_at, updated_at - interval '1 day' FROM {S}.courses;
INSERT INTO {CD2}.users SELECT id, name, sortable_name, workflow_state, created_at, updated_at - interval '1 day'
    FROM {S}.users;
INSERT INTO {CD2}.enrollments SELECT id, user_id, course_id, course_section_id, type, workflow_state, NULL, created_at,
    updated_at - interval '1 day' FROM {S}.enrollments WHERE hashint8(id) % 20 <> 0;  -- 5%: made since the sync
INSERT INTO {CD2}.assignments SELECT id, title, course_id, 'Course', points_possible, due_at, workflow_state,
    created_at, updated_at - interval '1 day' FROM {S}.assignments;
INSERT INTO {CD2}.submissions SELECT id, assignment_id, user_id, course_id, score, grade,
    CAST(workflow_state AS {CD2}.submissions__workflow_state), submitted_at, graded_at, created_at,
    coalesce(graded_at, updated_at) - interval '1 day' FROM {S}.submissions
"""


# ---- the queries, from the documents --------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    source: str  # where it is documented
    title: str  # its comment, or what it is
    sql: str


def _code(statement: str) -> str:
    return "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--")).strip()


def _title(statement: str) -> str:
    comments = [line.strip()[2:].strip() for line in statement.splitlines() if line.strip().startswith("--")]
    return comments[0] if comments else _code(statement).splitlines()[0][:80]


def sql_blocks(text: str) -> Iterator[str]:
    """The SELECT statements of a Markdown document's ```sql blocks (comments kept, for titles)."""
    for block in re.findall(r"```sql\n(.*?)```", text, re.DOTALL):
        for statement in block.split(";"):
            if _code(statement).upper().startswith(("SELECT", "WITH")):
                yield statement.strip()


def documented_queries() -> list[Query]:
    """Every example query of README.md, docs/analysts.md and the data dictionary (in the default schema)."""
    out = [Query(path.name, _title(s), _code(s)) for path in DOCUMENTS for s in sql_blocks(path.read_text())]
    out += [Query("warehouse.md", "the data dictionary's example", q)
            for q in re.findall(r"Example: `([^`]+)`", datadict.HEADER)]
    out += [Query("warehouse.md", title, query.rstrip().rstrip(";")) for title, query in datadict.CD2_QUERIES.items()]
    return out


def in_schema(sql: str, schema: str = S) -> str:
    """A documented query (written for the default schema) against the configured one."""
    return sql if schema == DEFAULT_WAREHOUSE_SCHEMA else sql.replace(f"{DEFAULT_WAREHOUSE_SCHEMA}.", f"{schema}.")


# The example ids the documents use, by the column they are compared with; replaced by ids of the data.
ID_COLUMNS = {"course_id": "course", "context_id": "course", "course_section_id": "section",
              "submission_id": "submission", "user_id": "student"}
_ID_FILTER = re.compile(r"\b((?:\w+\.)?(" + "|".join(ID_COLUMNS) + r")\s*=\s*)(\d+)\b")


def substitute(sql: str, ids: dict[str, int]) -> str:
    """Replace the literal ids a query filters on (``course_id = 565``) with the filled data's."""
    return _ID_FILTER.sub(lambda m: f"{m.group(1)}{ids[ID_COLUMNS[m.group(2)]]}", sql)


# ---- the verdict ----------------------------------------------------------------------------------

def watched(name: str, large: frozenset[str] = frozenset()) -> bool:
    """``events`` and its partitions always; fact tables when large (``large``: their names)."""
    return name == "events" or name.startswith("events_") or name in large


def _read_nothing(node: dict[str, Any]) -> bool:
    """An analyzed scan that returned and filtered out no row (an empty monthly partition ahead)."""
    return "Actual Rows" in node and node["Actual Rows"] == 0 and node.get("Rows Removed by Filter", 0) == 0


def seq_scans(plan: dict[str, Any], schema: str = S,
              is_watched: Callable[[str], bool] = watched) -> list[str]:
    """The watched tables of ``schema`` a plan (EXPLAIN's JSON, a node; VERBOSE names the schema) reads
    with a sequential scan, once each. A monthly partition counts as its table (docs/retention.md); a
    scan that read nothing does not count."""
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Schema", schema) == schema and not _read_nothing(plan):
        name = parent_of(plan.get("Relation Name", ""))
        if is_watched(name):
            found.append(name)
    for child in plan.get("Plans", []):
        found += seq_scans(child, schema, is_watched)
    return list(dict.fromkeys(found))


def describe(node: dict[str, Any]) -> str:
    """One plan node in a line: type, relation, index, actual rows and time."""
    parts = [node.get("Node Type", "?")]
    if node.get("Parallel Aware"):
        parts[0] = "Parallel " + parts[0]
    if "Relation Name" in node:
        schema = node.get("Schema", S)
        parts.append(f"on {node['Relation Name'] if schema == S else schema + '.' + node['Relation Name']}")
    if "Index Name" in node:
        parts.append(f"using {node['Index Name']}")
    if "Actual Rows" in node:
        loops = node.get("Actual Loops", 1)
        parts.append(f"(rows {node['Actual Rows'] * loops:,}, {node.get('Actual Total Time', 0):,.1f} ms"
                     + (f", {loops} loops)" if loops > 1 else ")"))
    return " ".join(parts)


def top_nodes(plan: dict[str, Any], depth: int = 4, indent: int = 0) -> list[str]:
    """The plan's first levels, one line each, and every scan below them (they say which index serves)."""
    shown = indent < depth or "Scan" in plan.get("Node Type", "")
    lines = ["  " * indent + describe(plan)] if shown else []
    for child in plan.get("Plans", []):
        lines += top_nodes(child, depth, indent + 1)
    return lines


@dataclass
class Measured:
    source: str
    title: str
    sql: str
    ms: float = 0.0  # planning + execution, warm
    rows: int = 0
    shared_hit: int = 0
    shared_read: int = 0
    nodes: list[str] = field(default_factory=list)
    seq_scans: list[str] = field(default_factory=list)
    diagnosis: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.seq_scans)


# ---- running --------------------------------------------------------------------------------------

async def _explain(engine: AsyncEngine, sql: str, *, analyze: bool, settings: tuple[str, ...] = ()) -> dict:
    async with engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        for setting in settings:
            await conn.exec_driver_sql(f"SET LOCAL {setting}")
        # VERBOSE: the plan names each relation's schema (ours, or Canvas Data 2's beside it)
        options = "ANALYZE, BUFFERS, VERBOSE, FORMAT JSON" if analyze else "VERBOSE, FORMAT JSON"
        raw = (await conn.exec_driver_sql(f"EXPLAIN ({options}) {sql}")).scalar_one()
    plan = json.loads(raw) if isinstance(raw, str) else raw
    return plan[0]


async def measure(engine: AsyncEngine, query: Query, large: frozenset[str],
                  settings: tuple[str, ...] = ()) -> Measured:
    """Run once to warm the cache, then EXPLAIN ANALYZE; diagnose a failing plan."""
    result = Measured(query.source, query.title, query.sql)
    await _explain(engine, query.sql, analyze=True, settings=settings)
    found = await _explain(engine, query.sql, analyze=True, settings=settings)
    root = found["Plan"]
    result.ms = round(found.get("Planning Time", 0.0) + found.get("Execution Time", 0.0), 1)
    result.rows = root.get("Actual Rows", 0)
    result.shared_hit = root.get("Shared Hit Blocks", 0)
    result.shared_read = root.get("Shared Read Blocks", 0)
    result.nodes = top_nodes(root)
    result.seq_scans = seq_scans(root, is_watched=lambda name: watched(name, large))
    if result.seq_scans:
        forced = await _explain(engine, query.sql, analyze=False, settings=(*settings, "enable_seqscan = off"))
        still = seq_scans(forced["Plan"], is_watched=lambda name: watched(name, large))
        if still:
            result.diagnosis = f"no index serves it on {', '.join(sorted(set(still)))}: add one"
        else:
            result.diagnosis = (f"an index serves it (cost {forced['Plan']['Total Cost']:,.0f} against the scan's "
                                f"{found['Plan']['Total Cost']:,.0f}): the planner preferred the scan")
    return result


async def example_ids(engine: AsyncEngine) -> dict[str, int]:
    """Ids of the filled data to put in the documents' examples: the student with the most page views
    in the last week, the course they viewed most, their section in it and their most regraded submission."""
    async with engine.connect() as conn:
        async def one(sql: str) -> int:
            value = (await conn.exec_driver_sql(sql)).scalar()
            if value is None:
                raise RuntimeError(f"the warehouse has no rows for: {sql}")
            return int(value)

        student = await one(f"SELECT user_id FROM {S}.events WHERE event_name = 'asset_accessed' "
                            "AND event_time > now() - interval '7 days' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
        course = await one(f"SELECT context_id FROM {S}.asset_accesses WHERE user_id = {student} AND "
                           "context_type = 'Course' AND event_time > now() - interval '7 days' "
                           "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
        section = await one(f"SELECT course_section_id FROM {S}.enrollments WHERE user_id = {student} "
                            f"AND course_id = {course} LIMIT 1")
        submission = await one(f"SELECT g.submission_id FROM {S}.submissions s JOIN {S}.grade_changes g "
                               f"ON g.submission_id = s.id WHERE s.user_id = {student} GROUP BY 1 "
                               "ORDER BY count(*) DESC, 1 LIMIT 1")
    return {"student": student, "course": course, "section": section, "submission": submission}


async def prepare_cd2(engine: AsyncEngine) -> None:
    """CD2's tables beside the warehouse, holding a day-old copy of the live tables."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {CD2} CASCADE")
        for statement in (CD2_SCHEMA + ";" + CD2_COPY).split(";"):
            if statement.strip():
                await conn.exec_driver_sql(statement)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(f"VACUUM (ANALYZE) {CD2}.courses, {CD2}.users, {CD2}.enrollments, "
                                   f"{CD2}.assignments, {CD2}.submissions")


async def large_tables(engine: AsyncEngine) -> frozenset[str]:
    """Fact tables holding at least LARGE_ROWS rows (by the planner's statistics)."""
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql(
            f"SELECT c.relname, c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = '{S}' AND c.relkind IN ('r', 'p')")).all()
    return frozenset(name for name, tuples in rows if name in FACT_TABLES and tuples >= LARGE_ROWS)


async def table_sizes(engine: AsyncEngine) -> dict[str, dict[str, int]]:
    """Rows (the planner's estimate) and megabytes (heap, indexes) of the warehouse's largest tables."""
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql(
            "SELECT c.relname, c.reltuples::bigint, pg_table_size(c.oid) / 1048576, pg_indexes_size(c.oid) / 1048576 "
            f"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{S}' "
            "AND c.relkind IN ('r', 'p') ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 6")).all()
    return {name: {"rows": tuples, "table_mb": table, "indexes_mb": indexes} for name, tuples, table, indexes in rows}


async def view_queries(engine: AsyncEngine) -> list[Query]:
    """Every analyst view of the warehouse, read whole."""
    async with engine.connect() as conn:
        names = (await conn.exec_driver_sql(
            f"SELECT table_name FROM information_schema.views WHERE table_schema = '{S}' ORDER BY 1")).scalars().all()
    return [Query("view", f"view {name}, whole", f"SELECT * FROM {S}.{name}") for name in names]


async def run_queries(engine: AsyncEngine, *, settings: tuple[str, ...] = (),
                      log: Callable[[str], None] | None = print) -> tuple[list[Measured], dict[str, int]]:
    """Every query, measured; the warehouse must be filled and analyzed (CD2's tables are made here)."""
    say = log or (lambda _line: None)
    await prepare_cd2(engine)
    ids = await example_ids(engine)
    large = await large_tables(engine)
    say(f"example ids: {ids}; large fact tables: {', '.join(sorted(large)) or 'none'}")
    say(f"largest tables: {json.dumps(await table_sizes(engine))}")
    queries = [Query(q.source, q.title, substitute(in_schema(q.sql), ids)) for q in documented_queries()]
    queries += await view_queries(engine)
    results = []
    for query in queries:
        measured = await measure(engine, query, large, settings)
        results.append(measured)
        say(report_lines(measured))
    return results, ids


def report_lines(m: Measured) -> str:
    verdict = f"FAIL seq scan on {', '.join(m.seq_scans)}: {m.diagnosis}" if m.failed else "ok"
    head = f"[{m.source}] {m.title}\n  {m.ms:,.1f} ms, {m.rows:,} rows, buffers hit {m.shared_hit:,} read " \
           f"{m.shared_read:,}; {verdict}"
    return "\n".join([head, *("    " + line for line in m.nodes)])


def summary(results: list[Measured]) -> str:
    lines = ["", "| query | source | ms | rows | verdict |", "|---|---|---:|---:|---|"]
    for m in results:
        lines.append(f"| {m.title} | {m.source} | {m.ms:,.1f} | {m.rows:,} | "
                     f"{'seq scan on ' + ', '.join(m.seq_scans) if m.failed else 'ok'} |")
    failed = [m for m in results if m.failed]
    lines.append("")
    lines.append(f"{len(failed)} of {len(results)} plans read events or a large fact table with a sequential scan"
                 if failed else f"all {len(results)} plans use indexes where they read events and large fact tables")
    return "\n".join(lines)


async def main(events: int, months: int, database_url: str | None, json_out: Path | None) -> int:
    out: dict[str, Any] = {"events": events, "months": months}
    if database_url:
        engine = create_async_engine(async_database_url(database_url), pool_size=4)
        try:
            results, ids = await run_queries(engine)
        finally:
            await engine.dispose()
    else:
        server = os.environ.get("DATABASE_URL", "").strip()
        if not server:
            print("DATABASE_URL must name a PostgreSQL server (a throwaway database is created on it)",
                  file=sys.stderr)
            return 2
        async with warehouse_at(server, "head") as (_, engine):
            started = time.perf_counter()
            report = await fill_warehouse(engine, events=events, months=months)
            out["fill"] = report.as_dict()
            out["fill_seconds"] = round(time.perf_counter() - started, 1)
            results, ids = await run_queries(engine)
    print(summary(results))
    out["ids"] = ids
    out["queries"] = [asdict(m) for m in results]
    if json_out is not None:
        json_out.write_text(json.dumps(out, indent=2, default=str))
    return 1 if any(m.failed for m in results) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--database-url", help="a filled warehouse to run on (nothing created or dropped)")
    parser.add_argument("--json", type=Path, help="write every figure and plan summary here")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.events, arguments.months, arguments.database_url, arguments.json)))
