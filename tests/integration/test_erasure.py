"""Erasure against a real PostgreSQL, through the worker's path (``prepare`` and ``WarehouseSink``):
after ``erase``, no text or jsonb column anywhere (tokens decoded) holds the person's id in either
form, login, email or name, no column naming a person holds their id, other people's rows stay;
events arriving later for them, through a sink with the workers' ``ErasureGuard``, are redacted on
arrival; the ids' stored form follows ``CANVAS_HOME_SHARD`` (unset, the events' shard, another)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.normalize.ids import canonical_id
from processors.privacy.erasure import ErasureError, ErasureRequest, erase
from processors.privacy.guard import ErasureGuard
from processors.replay import replay
from processors.sink import WarehouseSink
from processors.warehouse.schema import SCHEMA
from tests.support.people import (
    SHARD,
    Someone,
    canvas,
    corpus_digit_runs,
    findings,
    meta,
    scan,
    scenarios,
    someone,
    unrelated,
)
from tests.support.procs import role_env, run_cli
from tests.support.warehouse import empty_tables

SCENARIOS = sorted(scenarios(someone(1, "x"), [someone(2, "a"), someone(3, "b"), someone(4, "c")],
                             datetime(2024, 1, 1, tzinfo=UTC), 0, 1))
LOCALS = st.integers(1_000_000, 9_999_999).filter(lambda n: str(n) not in corpus_digit_runs())
HOMES = st.sampled_from([None, SHARD, 9])  # unset, the events' own shard, another shard
async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar() or 0)


async def run(url: str, local: int, form: int, chosen: list[str], by_global: bool, home: int | None) -> None:
    engine = create_async_engine(url, pool_size=2)
    ids = IdPolicy(home)

    def stored(someone_: Someone) -> int:  # how id columns hold another person's id (ids.py)
        return canonical_id(someone_.global_id, SHARD, home)

    try:
        async with engine.begin() as conn:
            await empty_tables(conn)
        p = someone(local, "person")
        others = [someone(local + 11_000_000 + i, f"other{i}") for i in range(3)]
        when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
        course = 500 + form
        messages = scenarios(p, others, when, form, course)
        await WarehouseSink(engine).write(prepare([messages[name] for name in chosen]
                                                  + unrelated(others, when, course), ids))
        assert await scan(engine, p), "the scenarios must name the person somewhere"

        # What the request states besides the id (docs/privacy.md): the person's name and email, which free
        # text may hold where no users row says them, and their uuid and LTI user id, which only the users
        # row and submissions link to the Canvas id (Canvas shows both).
        report = await erase(engine, ErasureRequest(p.global_id if by_global else p.local, "dpo ticket 42",
                                                    shard=None if by_global or home == SHARD else SHARD,
                                                    names=(p.name,), emails=(p.email,),
                                                    identifiers=(p.lti, p.uuid)), home_shard=home)
        assert report.erasure_id and report.shard_known
        problems = await scan(engine, p)
        assert problems == [], "\n".join(problems)

        # other people's rows stay, cleared of the person
        s = SCHEMA
        a, b, c = (stored(o) for o in others)
        assert await count(engine, f"SELECT count(*) FROM {s}.events WHERE user_id = {a} "
                                   "AND event_name = 'asset_accessed'") == \
            1 + ("profile_viewed" in chosen) + ("caliper_membership" in chosen)  # their views of the person's page
        assert await count(engine, f"SELECT count(*) FROM {s}.logins WHERE user_id = {b}") == 1
        if "grades_others" in chosen:
            assert await count(engine, f"SELECT count(*) FROM {s}.submissions WHERE user_id = {c} "
                                       "AND grader_id IS NULL AND score = 7") == 1
            assert await count(engine, f"SELECT count(*) FROM {s}.grade_changes WHERE user_id = {c} "
                                       "AND grader_id IS NULL") == 1
        if "observer" in chosen:
            assert await count(engine, f"SELECT count(*) FROM {s}.enrollments WHERE user_id = {b} "
                                       "AND associated_user_id IS NULL") == 1
        assert await count(engine, f"SELECT count(*) FROM {s}.asset_accesses WHERE asset_type = 'user' "
                                   "AND asset_id IS NULL AND asset_name IS NULL") == \
            ("profile_viewed" in chosen) + ("caliper_membership" in chosen)
        if "masquerade" in chosen:
            assert await count(engine, f"SELECT count(*) FROM {s}.courses WHERE name = 'Biology 101'") == 1
        if "lti_notice" in chosen:
            assert await count(engine, f"SELECT count(*) FROM {s}.lti_notices WHERE user_sub IS NULL "
                                       "AND jwt IS NULL") == 1
        async with engine.connect() as conn:
            audit = (await conn.execute(text(f"SELECT requested_by, completed_at, rows FROM {s}.erasures"))).one()
        assert audit.requested_by == "dpo ticket 42" and audit.completed_at is not None and audit.rows
        assert findings(json.dumps(audit.rows), p) == []

        # a replay rebuilds the tables from the redacted events: the person does not come back
        kept_submissions = await count(engine, f"SELECT count(*) FROM {s}.submissions")
        await replay(engine, ids)
        problems = await scan(engine, p)
        assert problems == [], "\n".join(problems)
        assert await count(engine, f"SELECT count(*) FROM {s}.submissions") == kept_submissions

        # later deliveries (redeliveries and new events) about the person are redacted on arrival,
        # by the sink every worker has (its guard loads the list in its first transaction)
        guarded = WarehouseSink(engine, guard=ErasureGuard())
        later = scenarios(p, others, when + timedelta(hours=1), form + 1, course)
        for batch in ([messages[name] for name in chosen], [later[name] for name in chosen]):
            await guarded.write(prepare(batch, ids))
        problems = await scan(engine, p)
        assert problems == [], "\n".join(problems)
        assert guarded.guard is not None and guarded.guard.counts["dropped"] + guarded.guard.counts["redacted"] > 0
    finally:
        await engine.dispose()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(local=LOCALS, form=st.integers(0, 5), by_global=st.booleans(), home=HOMES,
       chosen=st.lists(st.sampled_from(SCENARIOS), min_size=3, unique=True))
def test_after_erasure_nothing_anywhere_names_the_person(migrated_database_url, local, form, by_global, home,
                                                         chosen):
    asyncio.run(run(migrated_database_url, local, form, sorted(chosen), by_global, home))


def test_every_scenario_at_once(migrated_database_url):
    for home in (None, SHARD, 9):
        asyncio.run(run(migrated_database_url, 4_811_337, 2, SCENARIOS, by_global=False, home=home))


async def test_objects_sharing_the_persons_number_are_not_erased(engine):
    """Course 4811 and user 4811 (and their global forms) are different objects: only the user goes."""
    p = someone(4811, "person")
    others = [someone(90_000_000 + i, f"o{i}") for i in range(3)]
    when = datetime.now(UTC).replace(microsecond=0)
    messages = scenarios(p, others, when, 0, 4811)  # the course has the person's number
    ids = IdPolicy(SHARD)  # home shard: both the course and the user are stored as 4811
    await WarehouseSink(engine).write(prepare([messages["enrollment"], messages["page_view"],
                                               *unrelated(others, when, 4811)], ids))
    await erase(engine, ErasureRequest(p.local, "dpo"), home_shard=SHARD)
    s = SCHEMA
    assert await count(engine, f"SELECT count(*) FROM {s}.enrollments WHERE course_id = 4811") == 1
    assert await count(engine, f"SELECT count(*) FROM {s}.asset_accesses WHERE context_id = 4811") == 1
    async with engine.connect() as conn:
        payloads = [json.dumps(r) for r in (await conn.execute(text(f"SELECT payload FROM {s}.events"))).scalars()]
    assert any(str(SHARD * 10**13 + 4811) in payload for payload in payloads)  # the course, in the payloads
    for table in ("enrollments", "asset_accesses", "events"):
        assert await count(engine, f"SELECT count(*) FROM {s}.{table} WHERE user_id = {p.local}") == 0
    # Only the course's number is left: no login, email or name, and no id at a user position.
    assert [x for x in await scan(engine, p) if ": id:" not in x] == []


async def test_a_dry_run_changes_nothing(engine):
    p = someone(5_550_001, "dry")
    others = [someone(80_000_000 + i, f"d{i}") for i in range(3)]
    when = datetime.now(UTC).replace(microsecond=0)
    messages = scenarios(p, others, when, 1, 77)
    await WarehouseSink(engine).write(prepare(list(messages.values()), IdPolicy()))
    before = await scan(engine, p)
    report = await erase(engine, ErasureRequest(p.global_id, "dpo"), dry_run=True)
    assert report.erasure_id is None and report.rows["events"]["deleted"] >= 5
    assert await scan(engine, p) == before
    assert await count(engine, f"SELECT count(*) FROM {SCHEMA}.erasures") == 0


async def test_a_local_id_on_two_shards_is_refused_and_a_request_needs_a_requester(engine):
    p = someone(6_660_001, "two")
    others = [someone(70_000_000 + i, f"t{i}") for i in range(3)]
    when = datetime.now(UTC).replace(microsecond=0)
    messages = scenarios(p, others, when, 0, 88)
    await WarehouseSink(engine).write(prepare([messages["login"]], IdPolicy(9)))  # stored global: shard 2107
    async with engine.begin() as conn:
        await conn.execute(text(f"INSERT INTO {SCHEMA}.users (id, field_versions) VALUES "
                                f"({30 * 10**13 + p.local}, '{{}}')"))  # the same local id on shard 30
    with pytest.raises(ErasureError, match="several shards"):
        await erase(engine, ErasureRequest(p.local, "dpo"))
    with pytest.raises(ErasureError, match="requested-by"):
        await erase(engine, ErasureRequest(p.global_id, " "))


async def test_erasing_again_uses_what_the_first_erasure_kept(engine):
    """The person's data comes back (a backup restored, a writer without the list): a second erasure
    given only the id still finds their name, through the hashes the first one kept."""
    p = someone(3_330_007, "again")
    others = [someone(60_000_000 + i, f"g{i}") for i in range(3)]
    when = datetime.now(UTC).replace(microsecond=0)
    ids = IdPolicy()
    first = scenarios(p, others, when, 0, 66)
    await WarehouseSink(engine).write(prepare([first["user_updated"], first["profile_viewed"]], ids))
    await erase(engine, ErasureRequest(p.global_id, "dpo 1"))
    assert await scan(engine, p) == []

    a = others[0]
    reply = canvas(meta("discussion_entry_created", when + timedelta(hours=1), a, 0), {  # a's post names them
        "discussion_entry_id": "770001", "discussion_topic_id": "44", "user_id": str(a.global_id),
        "text": f"<p>Thanks <a href='/courses/66/users/{p.local}'>{p.name}</a>!</p>"}, when + timedelta(hours=1))
    await WarehouseSink(engine).write(prepare([reply], ids))  # no list: the name is back
    assert any(": name:" in x for x in await scan(engine, p))
    report = await erase(engine, ErasureRequest(p.global_id, "dpo 2"))  # only the id, no users row any more
    problems = await scan(engine, p)
    assert problems == [], "\n".join(problems)
    assert report.rows["events"]["redacted"] == 1 and report.rows["discussion_entries"]["redacted"] == 1
    assert await count(engine, f"SELECT count(*) FROM {SCHEMA}.discussion_entries") == 1  # a's post stays
    assert await count(engine, f"SELECT count(*) FROM {SCHEMA}.erased_users") == 2


async def test_the_erase_command(engine, migrated_database_url):
    """``canvas-stream erase`` as an operator runs it: a dry run, a run, and what it refuses."""
    p = someone(2_220_009, "cli")
    others = [someone(30_000_000 + i, f"c{i}") for i in range(3)]
    messages = scenarios(p, others, datetime.now(UTC).replace(microsecond=0), 0, 21)
    await WarehouseSink(engine).write(prepare([messages["login"], messages["grades_others"]], IdPolicy()))
    env = role_env(DATABASE_URL=migrated_database_url)

    dry = await asyncio.to_thread(run_cli, env, "erase", "--user-id", str(p.global_id), "--requested-by", "t-1",
                                  "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would be affected" in dry.stdout and "recorded" not in dry.stdout
    done = await asyncio.to_thread(run_cli, env, "erase", "--user-id", str(p.global_id), "--requested-by", "t-1")
    assert done.returncode == 0, done.stderr
    assert "logins: 1 deleted were affected" in done.stdout and "later events for this person" in done.stdout
    assert await scan(engine, p) == []
    unknown = await asyncio.to_thread(run_cli, env, "erase", "--user-id", "123", "--requested-by", "t-2")
    assert unknown.returncode == 0 and "global form of this local id is unknown" in unknown.stderr
    refused = await asyncio.to_thread(run_cli, env, "erase", "--user-id", "123")
    assert refused.returncode == 2 and "--requested-by" in refused.stderr
