"""The project's own example events (shipped for ``canvas-stream send``) and fresh copies of them."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from canvas_stream.devkeys import dev_jwk, dev_kid, usable_upstream_keys
from canvas_stream.records import Record, Verification, detect_format
from canvas_stream.send import (
    EXAMPLES_DIR,
    FORMATS,
    SendError,
    copies,
    event_ids,
    example_types,
    fresh_copy,
    load_events_file,
    load_example,
    sign_event,
)
from processors.normalize import IdPolicy, normalize
from processors.normalize.model import Normalized
from tests.support.corpus import CORPUS
from tests.support.jwt_helpers import rsa_key

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

TYPES = example_types()
NOW = datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


def _normalized(payload: dict) -> Normalized:
    record = Record(source="live_event", format=detect_format(payload), received_at="2031-05-06T07:08:10+00:00",
                    payload=payload, verification=Verification(signed=True))
    return normalize(record, IDS)


def test_a_handful_of_common_types_in_both_formats():
    assert set(TYPES) >= {"course_created", "enrollment_created", "submission_created", "grade_change",
                          "logged_in", "asset_accessed"}
    for fmt in FORMATS:
        assert {p.stem for p in (EXAMPLES_DIR / fmt).glob("*.json")} == set(TYPES)


def test_examples_are_the_projects_own_not_the_documentation_corpus():
    corpus_payloads = {json.dumps(ex["payload"], sort_keys=True)
                       for path in CORPUS.glob("*/*.json") for ex in json.loads(path.read_text()).get("examples", [])}
    corpus_text = "\n".join(p.read_text() for p in CORPUS.glob("*/*.json"))
    for name in TYPES:
        for fmt in FORMATS:
            payload = load_example(name, fmt)
            assert json.dumps(payload, sort_keys=True) not in corpus_payloads
            assert payload_hosts(payload) == {"canvas.example.edu"}
    assert "canvas.example.edu" not in corpus_text


def payload_hosts(payload: dict) -> set[str]:
    if detect_format(payload) == "canvas":
        return {payload["metadata"]["hostname"]}
    return {item["extensions"]["com.instructure.canvas"]["hostname"] for item in payload["data"]}


@pytest.mark.parametrize("name", TYPES)
def test_examples_normalize_completely_and_both_formats_agree(name: str):
    canvas, caliper = _normalized(load_example(name, "canvas")), _normalized(load_example(name, "caliper"))
    for out in (canvas, caliper):
        assert [e.event_name for e in out.events] == [name]
        assert out.unknown_events == [] and out.unknown_fields == []
        assert out.changes
    a, b = canvas.events[0], caliper.events[0]
    assert (a.event_time, a.user_id, a.context_type, a.context_id) == (b.event_time, b.user_id, b.context_type,
                                                                       b.context_id)
    # One happening in two formats: the same happening, so the same rows (facts included).
    assert a.happening_id == b.happening_id and a.event_id != b.event_id
    left, right = {c.table: c for c in canvas.changes}, {c.table: c for c in caliper.changes}
    assert set(left) == set(right)
    for table, change in left.items():
        shared = set(change.fields) & set(right[table].fields) - {"event_id"}  # the delivery differs by nature
        assert shared, table
        assert {k: change.fields[k] for k in shared} == {k: right[table].fields[k] for k in shared}, table
        assert dict(change.key) == dict(right[table].key)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", TYPES)
def test_fresh_copies_are_new_events_about_new_objects_in_the_same_tenant(name: str, fmt: str):
    original = load_example(name, fmt)
    first = fresh_copy(original, rng=random.Random(1), now=NOW)
    second = fresh_copy(original, rng=random.Random(2), now=NOW)
    assert load_example(name, fmt) == original  # the example itself is untouched
    ids = [set(event_ids(e)) for e in (original, first, second)]
    assert ids[0].isdisjoint(ids[1]) and ids[1].isdisjoint(ids[2])
    outs = [_normalized(e) for e in (original, first, second)]
    for out in outs[1:]:
        assert out.unknown_fields == [] and [e.event_name for e in out.events] == [name]
        assert out.events[0].event_time == NOW
    keys = [{(c.table, tuple(sorted(c.key.items()))) for c in out.changes} for out in outs]
    assert keys[0].isdisjoint(keys[1]) and keys[1].isdisjoint(keys[2])
    # The same tables and columns, with the tenant kept.
    assert [c.table for c in outs[0].changes] == [c.table for c in outs[1].changes]
    assert [set(c.fields) for c in outs[0].changes] == [set(c.fields) for c in outs[1].changes]
    assert _root_account(first) == _root_account(original)


def _root_account(event: dict) -> str | None:
    if detect_format(event) == "canvas":
        return event["metadata"]["root_account_id"]
    return event["data"][0]["actor"].get("extensions", {}).get("com.instructure.canvas", {}).get("root_account_id")


def test_one_object_keeps_one_fresh_id_within_a_copy():
    canvas = fresh_copy(load_example("enrollment_created", "canvas"), rng=random.Random(3), now=NOW)
    assert canvas["metadata"]["context_id"] == canvas["body"]["course_id"]
    assert canvas["body"]["course_id"] != load_example("enrollment_created", "canvas")["body"]["course_id"]
    assert canvas["metadata"]["root_account_id"] == "10000000000001"
    assert int(canvas["body"]["course_id"]) // 10**13 == 1  # the shard is kept
    caliper = fresh_copy(load_example("enrollment_created", "caliper"), rng=random.Random(3), now=NOW)
    item = caliper["data"][0]
    ext = item["object"]["extensions"]["com.instructure.canvas"]
    course = item["group"]["extensions"]["com.instructure.canvas"]["entity_id"]
    assert ext["course_id"] == f"urn:instructure:canvas:course:{course}"
    assert ext["course_section_id"] == item["group"]["id"]
    assert item["object"]["id"].endswith(":" + ext["entity_id"])
    assert item["eventTime"] == caliper["sendTime"] == item["object"]["dateCreated"] == "2031-05-06T07:08:09.123Z"


def test_copies_cycle_through_the_events_and_keep_ids_on_request():
    events = [load_example("logged_in", "canvas"), load_example("grade_change", "caliper")]
    fresh = list(copies(events, 5, fresh=True, seed=7))
    assert [detect_format(e) for e in fresh] == ["canvas", "caliper", "canvas", "caliper", "canvas"]
    assert len({event_ids(e)[0] for e in fresh}) == 5
    kept = list(copies(events, 3, fresh=False))
    assert kept[0] == kept[2] == events[0]


def test_signed_event_is_what_canvas_sends():
    key = rsa_key("dev-test")
    event = load_example("course_created", "canvas")
    token = sign_event(event, key, dev_kid(key), issuer="https://live-events.canvas.instructure.com", now=1_900_000_000)
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": dev_kid(key), "typ": "JWT"}
    claims = jwt.decode(token, key.public_key(), algorithms=["RS256"], issuer="https://live-events.canvas.instructure.com",
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["exp"] - claims["iat"] == 300
    assert {k: claims[k] for k in ("metadata", "body")} == event
    jwk = dev_jwk(key)
    assert jwk["kid"].startswith("canvas-stream-dev-") and jwk["alg"] == "RS256" and "d" not in jwk


def test_upstream_keys_are_passed_on_without_our_kid_and_bounded():
    own = "canvas-stream-dev-x"
    doc = {"keys": [{"kid": own}, {"kid": "a"}, "junk", *({"kid": str(i)} for i in range(30))]}
    keys = usable_upstream_keys(doc, own)
    assert keys[0] == {"kid": "a"} and len(keys) == 19 and all(k["kid"] != own for k in keys)
    assert usable_upstream_keys({"keys": "no"}, own) == [] and usable_upstream_keys([], own) == []


def test_files_of_either_format_one_event_or_a_list(tmp_path: Path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(load_example("logged_in", "caliper")))
    assert [detect_format(e) for e in load_events_file(one)] == ["caliper"]
    several = tmp_path / "several.json"
    several.write_text(json.dumps([load_example("logged_in", "canvas"), load_example("grade_change", "caliper")]))
    assert [detect_format(e) for e in load_events_file(several)] == ["canvas", "caliper"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([load_example("logged_in", "canvas"), {"hello": 1}]))
    with pytest.raises(SendError, match="item 1 is neither"):
        load_events_file(bad)
    (tmp_path / "not.json").write_text("{")
    with pytest.raises(SendError, match="not JSON"):
        load_events_file(tmp_path / "not.json")
    with pytest.raises(SendError, match="cannot read"):
        load_events_file(tmp_path / "missing.json")
    with pytest.raises(SendError, match="no example event 'nope'"):
        load_example("nope")
