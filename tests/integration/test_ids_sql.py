"""The SQL mirror of the id rule (migration 0007's ``id_shard``, ``event_shard``, ``canonical_id``),
which converts a previous release's warehouse, gives the worker's answers (processors/normalize/ids.py)."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from processors.normalize.ids import MAX_SHARD, SHARD_FACTOR, caliper_event_shard, canonical_id, canvas_event_shard
from processors.warehouse import tables
from tests.support.corpus import load_examples

S = tables.SCHEMA
SHARDS = st.one_of(st.none(), st.sampled_from([1, 3, 2107, MAX_SHARD]))


async def test_event_shard_in_sql_is_the_normalizers_on_every_corpus_event(engine):
    cases = []
    for example in load_examples():
        if example.format == "canvas":
            cases.append(("canvas", example.payload, canvas_event_shard(example.payload["metadata"])))
        else:
            for item in example.payload["data"]:
                cases.append(("caliper", {"data": [item]}, caliper_event_shard(item)))
    cases += [("canvas", {"metadata": {"root_account_id": "1", "context_id": "30000000000565"}}, 3),
              ("caliper", {"data": [{"actor": "x", "object": {"id": "urn:instructure:canvas:user:11210000000000001"}}]},
               1121),
              ("lti_notice", {"metadata": {"root_account_id": "21070000000000001"}}, None)]
    assert {shard for _, _, shard in cases} >= {None, 1, 2107, 3, 1121}
    async with engine.connect() as conn:
        for fmt, payload, expected in cases:
            got = (await conn.execute(text(f"SELECT {S}.event_shard(:f, CAST(:p AS jsonb))"),
                                      {"f": fmt, "p": json.dumps(payload)})).scalar_one()
            assert got == expected, (fmt, payload)


JSON_IDS = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**63 - 1).map(str),
    st.integers(0, 2**64).map(lambda n: f"urn:instructure:canvas:account:{n}"),
    st.text(alphabet="0123456789: a\n", max_size=22), st.booleans(), st.none(),
    st.dictionaries(st.just("id"), st.integers(), max_size=1), st.lists(st.integers(), max_size=1))


CASES = st.tuples(JSON_IDS, JSON_IDS, st.one_of(st.integers(-(2**63), 2**63 - 1),
                                              st.integers(0, (MAX_SHARD + 1) * SHARD_FACTOR)), SHARDS, SHARDS)


@settings(max_examples=25, deadline=None)
@given(cases=st.lists(CASES, min_size=1, max_size=40))
def test_the_sql_rule_agrees_with_the_python_rule(migrated_database_url, cases):
    async def check() -> None:
        engine = create_async_engine(migrated_database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                for root, context, number, event_shard, home in cases:
                    meta = {"root_account_id": root, "context_account_id": context}
                    got = (await conn.execute(
                        text(f"SELECT {S}.event_shard('canvas', CAST(:p AS jsonb)), "
                             f"{S}.canonical_id(CAST(:n AS bigint), CAST(:e AS bigint), CAST(:h AS bigint))"),
                        {"p": json.dumps({"metadata": meta}), "n": number, "e": event_shard, "h": home})).one()
                    assert got[0] == canvas_event_shard(meta), meta
                    assert got[1] == canonical_id(number, event_shard, home), (number, event_shard, home)
        finally:
            await engine.dispose()

    asyncio.run(check())
