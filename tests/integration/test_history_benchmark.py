"""The history benchmark's code path on a small warehouse (``benchmarks/history.py`` at 20,000 events).

The figures at three million events are in docs/scaling.md; here the run is held to what it claims:
the upgrade to partitions keeps every row, a one-month filter reads one partition and a lookup by id
and time one, the bulk and writer paths write what they say, the erasure leaves no event of the
person, and retention's drop leaves nothing of the month while the writer goes on.
"""

from __future__ import annotations

import pytest_asyncio

from benchmarks import history
from processors.warehouse.partitions import HISTORY_TABLES

EVENTS = 20_000
MONTHS = 3


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def measured(postgres_server_url):
    return await history.main(postgres_server_url, EVENTS, MONTHS, cpu=False, log=None)


async def test_the_upgrade_to_partitions_keeps_every_row(measured):
    upgrade = measured["upgrade"]
    assert upgrade["rows_before"] == upgrade["rows_after"]
    assert upgrade["rows_before"]["events"] == EVENTS + measured["bulk_copy_plain"]["events_rows"]
    assert upgrade["rows"] == sum(upgrade["rows_before"].values()) > EVENTS
    # every history table partitioned; the filled ones: _before, the filled months (MONTHS whole or
    # partial, and the current one) and 3 ahead; the empty ones from the current month on
    assert set(upgrade["partitions"]) == set(HISTORY_TABLES)
    assert all(upgrade["partitions"][t] == 1 + MONTHS + 1 + 3 for t in history.HISTORY), upgrade["partitions"]
    assert upgrade["s_per_million_rows"] > 0


async def test_a_time_range_reads_only_its_partitions(measured):
    plain, partitioned = measured["queries_plain"], measured["queries_partitioned"]
    assert all(q["partitions_scanned"] == 0 for q in plain.values())  # plain tables: no partitions
    assert partitioned["count_one_month"]["partitions_scanned"] == 1
    assert partitioned["daily_active_users_one_month"]["partitions_scanned"] == 1
    assert partitioned["one_course_one_month"]["partitions_scanned"] == 1
    assert partitioned["event_by_id_and_time"]["partitions_scanned"] == 1
    assert partitioned["event_by_id_and_time"]["rows"] == 1
    filled = sum(1 for p in measured["partition_sizes"]["events"].values() if p["rows"])
    assert partitioned["count_all_history"]["partitions_scanned"] >= filled >= MONTHS
    assert partitioned["event_by_id_without_time"]["partitions_scanned"] >= filled  # no time: every month's index


async def test_the_bulk_and_writer_paths_write_what_they_count(measured):
    for path in ("bulk_copy_plain", "bulk_copy_partitioned"):
        copy = measured[path]
        assert copy["events_rows"] == 1000 == copy["asset_accesses_rows"], copy  # max(1000, EVENTS // 20)
        assert copy["events_rows_per_s"] > 0
    writer = measured["writer_path"]
    assert writer["events"] == 12 * history.BATCH and writer["rows_written"] >= writer["events"] * 0.8
    assert writer["write_events_per_s"] > 0


async def test_the_erasure_leaves_no_event_of_the_person_now_as_before(measured):
    erasure = measured["erasure"]
    for way in ("now", "before"):  # the single key scan, and the paged scans it replaced: the same work done
        assert erasure[way]["events_left_with_their_user_id"] == 0
        assert erasure[way]["rows"]["users"]["deleted"] == 1
        assert erasure[way]["rows"]["events"]["deleted"] >= erasure[way]["their_events"] > 0
    # the id pattern of today lets through no more events than the loose one, and every event of the person
    now, loose = erasure["payload_scan_id_pattern_now"], erasure["payload_scan_id_pattern_before"]
    assert erasure["now"]["their_events"] <= now["events_matching"] <= loose["events_matching"]


async def test_retention_drops_the_oldest_month_while_the_writer_writes(measured):
    drop = measured["retention_drop"]
    gone = f"events_p{drop['month'].replace('-', '')}"
    assert any(gone in action for action in drop["events_actions"])
    assert gone not in drop["partitions_left"] and "events_before" in drop["partitions_left"]
    assert drop["rows_left_in_dropped_month"] == 0
    assert drop["writer_batches_during"] == 37  # 40 batches, 3 of them before the drop: none lost
