"""Monthly partitions and retention, planned without a database: the keys of history rows, bounds, months
to create, what retention drops; and the settings that drive them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canvas_stream.settings import SettingError, Settings
from processors.maintenance import Maintenance
from processors.normalize import IdPolicy, normalize
from processors.normalize.model import EPOCH, happening_time, history_time
from processors.warehouse import schema, tables
from processors.warehouse.partitions import (
    HISTORY_TABLES,
    Month,
    Partition,
    create_partition_sql,
    drop_partition_sql,
    is_partition_name,
    months_between,
    months_to_create,
    parse_bound,
    partition_name,
)
from processors.warehouse.retention import ALL, Policy, PolicyError, eligible_tables, months_ago, plan_history
from tests.support.corpus import load_examples
from tests.support.happenings import paired_happenings, record

EXAMPLES = load_examples()
IDS = IdPolicy()
NOW = datetime(2024, 8, 15, 12, 0, tzinfo=UTC)


def layout(table: str, floor: Month, last: Month) -> list[Partition]:
    parts = [Partition(table, f"{table}_before", None, floor)]
    parts += [Partition(table, partition_name(table, m), m, m.add(1)) for m in months_between(floor, last)]
    return parts


def test_history_tables_are_keyed_by_their_id_and_the_partition_time():
    facts = {name for name, spec in schema.TABLE_SPECS.items() if spec.keys[0].name == "happening_id"}
    assert set(HISTORY_TABLES) == facts | {"events"} and len(facts) == 9
    for name in HISTORY_TABLES:
        spec = schema.TABLE_SPECS[name]
        first = "event_id" if name == "events" else "happening_id"
        assert [c.name for c in spec.keys] == [first, schema.PARTITION_COLUMN]
        assert not spec.keys[1].nullable and schema.PARTITION_COLUMN not in spec.data_columns
        assert tables.TABLES[name].dialect_options["postgresql"]["partition_by"] == "RANGE (event_time)"
    assert not any(spec.partitioned for name, spec in schema.TABLE_SPECS.items() if name not in HISTORY_TABLES)


def test_history_rows_are_filed_under_a_time_derived_from_the_event_alone():
    """events: the event's own time (the epoch without one); facts: the happening's second. Never the
    receipt time, so a redelivery whenever it arrives has the key of the first delivery."""
    seen = 0
    for example in EXAMPLES:
        out = normalize(example.record(), IDS)
        for event in out.events:
            assert event.event_time.tzinfo is not None  # never None: a partition key
        times = {e.happening_id: e.event_time for e in out.events}
        for change in out.changes:
            if schema.TABLE_SPECS[change.table].partitioned:
                assert change.key["event_time"] == times[change.key["happening_id"]].replace(microsecond=0)
                assert "event_time" not in change.fields
                seen += 1
    assert seen > 20
    assert history_time(None) == EPOCH == happening_time(None)
    assert happening_time(datetime(2024, 8, 15, 12, 0, 1, 999999, tzinfo=UTC)) == datetime(2024, 8, 15, 12, 0, 1,
                                                                                             tzinfo=UTC)


def test_both_formats_of_a_happening_share_the_fact_key_whatever_their_precision():
    for canvas, caliper in paired_happenings(1):
        canvas["metadata"]["event_time"] = canvas["metadata"]["event_time"][:19] + ".987Z"
        keys = []
        for payload in (canvas, caliper):
            out = normalize(record(payload), IDS)
            keys.append({(c.table, tuple(sorted(c.key.items())))
                         for c in out.changes if schema.TABLE_SPECS[c.table].partitioned})
        assert keys[0] == keys[1], canvas["metadata"]["event_name"]


def test_month_arithmetic_and_names():
    assert Month(2024, 1).add(-1) == Month(2023, 12)
    assert Month(2024, 12).add(1) == Month(2025, 1)
    assert Month(2024, 3).add(-27) == Month(2021, 12)
    assert Month.of(datetime(2024, 1, 31, 23, 59, tzinfo=UTC)) == Month(2024, 1)
    assert partition_name("events", Month(2024, 2)) == "events_p202402"
    assert is_partition_name("events_p202402") and is_partition_name("asset_accesses_before")
    assert not is_partition_name("events") and not is_partition_name("courses_p202402")
    assert not is_partition_name("events_p2024") and not is_partition_name(None)


def test_months_are_attached_not_created_as_partitions_and_dropped_after_a_detach():
    create, attach = create_partition_sql("events", "events_p202402", Month(2024, 2), Month(2024, 3), schema="s")
    assert create.startswith('CREATE TABLE "s"."events_p202402" (LIKE "s"."events"') and "PARTITION OF" not in create
    assert attach == ('ALTER TABLE "s"."events" ATTACH PARTITION "s"."events_p202402" '
                      "FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00')")
    assert "FROM (MINVALUE)" in create_partition_sql("events", "events_before", None, Month(2024, 2))[1]
    assert [s.split()[0] for s in drop_partition_sql("events", "events_p202402")] == ["ALTER", "DROP"]


def test_bounds_are_parsed_from_postgresql_text():
    p = parse_bound("events", "events_p202401",
                    "FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00')")
    assert (p.lower, p.upper, p.is_before) == (Month(2024, 1), Month(2024, 2), False)
    b = parse_bound("events", "events_before", "FOR VALUES FROM (MINVALUE) TO ('2024-01-01 00:00:00+00')")
    assert b.is_before and b.upper == Month(2024, 1) and b.covers(Month(1970, 1))
    with pytest.raises(ValueError, match="not a monthly range partition"):
        parse_bound("events", "events_default", "DEFAULT")


def test_missing_months_are_found_from_the_first_month_to_the_horizon():
    parts = layout("events", Month(2024, 5), Month(2024, 8))
    assert months_to_create(parts, NOW, ahead=3) == [Month(2024, 9), Month(2024, 10), Month(2024, 11)]
    holes = [p for p in parts if p.lower != Month(2024, 6)]
    assert months_to_create(holes, NOW, ahead=0) == [Month(2024, 6)]
    assert months_to_create(layout("events", Month(2024, 5), Month(2024, 11)), NOW, ahead=3) == []


@given(st.integers(1, 40), st.integers(0, 30), st.integers(1, 30), st.booleans())
def test_retention_drops_only_months_entirely_past_it_and_keeps_every_time_covered(months, age, span, rows):
    floor = Month.of(NOW).add(-age - span)
    parts = layout("logins", floor, Month.of(NOW).add(3))
    plan = plan_history("logins", parts, months, NOW, before_has_rows=rows)
    cutoff = Month.of(NOW).add(-months)
    assert plan.cutoff == cutoff
    for p in plan.drop:
        assert not p.is_before and p.upper <= cutoff  # every row in it is older than the cutoff
    kept = [p for p in parts if p not in plan.drop and not p.is_before]
    assert all(p.upper > cutoff for p in kept)
    new_floor = plan.new_floor or floor
    # After the run, _before ends where the first kept month starts: no time is left without a partition.
    assert not kept or min(p.lower for p in kept) == new_floor
    if plan.new_floor is not None:
        assert plan.new_floor <= cutoff  # never cuts into retained months


def test_before_partition_is_kept_while_it_may_hold_rows_within_retention():
    parts = layout("events", Month(2024, 6), Month(2024, 11))
    plan = plan_history("events", parts, 6, NOW, before_has_rows=True)  # cutoff 2024-02 < floor 2024-06
    assert plan.drop == () and plan.new_floor is None
    emptied = plan_history("events", parts, 2, NOW, before_has_rows=True)  # cutoff 2024-06 == floor
    assert emptied.drop == () and emptied.new_floor == Month(2024, 6)
    assert plan_history("events", parts, 2, NOW, before_has_rows=False).new_floor is None


def test_policy_names_tables_retention_can_apply_to():
    eligible = eligible_tables()
    assert eligible["events"] == "partitions" and eligible["asset_accesses"] == "partitions"
    assert eligible["courses"] == "deleted" and eligible["quarantine"] == "received"
    assert "retention_runs" not in eligible  # the evidence never expires
    policy = Policy({"asset_accesses": 13, ALL: 36})
    assert policy.for_table("asset_accesses") == 13 and policy.for_table("events") == 36
    assert set(policy.tables()) == set(eligible)
    assert Policy({}).tables() == {}
    for bad, message in [({"nope": 3}, "unknown table"), ({"conversations": 3}, "cannot apply"),
                         ({"events": 0}, ">= 1"), ({"events": True}, ">= 1")]:
        with pytest.raises(PolicyError, match=message):
            Policy(bad)


def test_months_ago_is_calendar_months():
    assert months_ago(datetime(2024, 3, 31, tzinfo=UTC), 1) == datetime(2024, 2, 29, tzinfo=UTC)
    assert months_ago(datetime(2024, 8, 15, 12, tzinfo=UTC), 13) == datetime(2023, 7, 15, 12, tzinfo=UTC)


def test_retention_settings_default_to_keeping_everything_and_read_json(monkeypatch):
    settings = Settings(_env_file=None)
    assert settings.retention_months == {} and settings.retention_interval_hours is None
    assert (settings.retention_lock_timeout_ms, settings.partitions_ahead_months) == (500, 3)
    monkeypatch.setenv("RETENTION_MONTHS", '{"asset_accesses": 13, "*": 36}')
    monkeypatch.setenv("RETENTION_INTERVAL_HOURS", "24")
    settings = Settings(_env_file=None)
    assert settings.retention_months == {"asset_accesses": 13, "*": 36}
    assert Policy(settings.retention_months).for_table("logins") == 36
    assert settings.retention_interval_hours == 24


def test_a_worker_refuses_a_retention_setting_it_cannot_apply(monkeypatch):
    monkeypatch.setenv("RETENTION_MONTHS", '{"conversations": 3}')
    with pytest.raises(SettingError, match=r"RETENTION_MONTHS: .*cannot apply to 'conversations'"):
        Maintenance(Settings(_env_file=None))
    monkeypatch.setenv("RETENTION_MONTHS", '{"logins": 13}')
    assert Maintenance(Settings(_env_file=None)).policy.for_table("logins") == 13
