"""Entities are not events: a Caliper envelope's entity describes become caliper_entities rows."""

from __future__ import annotations

import copy
import json

from processors.normalize import IdPolicy, normalize
from processors.normalize.caliper import is_entity
from processors.normalize.model import parse_time
from processors.warehouse.writer import collapse
from tests.support.corpus import CORPUS
from tests.support.happenings import record

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

ENVELOPE = json.loads((CORPUS.parent / "caliper-envelopes" / "mixed_payload.json").read_text())
PERSON = "https://lms.example.org/users/4711"


def test_the_spec_shaped_envelope_gives_three_events_and_four_entities():
    out = normalize(record(ENVELOPE), IDS)
    assert [e.event_name for e in out.events] == [
        "caliper:AssessmentEvent/Started", "caliper:AssessmentEvent/Submitted", "caliper:GradeEvent/Graded"]
    assert not any("None" in e.event_name for e in out.events)
    entities = {c.key["id"]: c for c in out.changes if c.table == "caliper_entities"}
    assert [c.table for c in out.changes] == ["caliper_entities"] * 4
    assert {k: c.fields["type"] for k, c in entities.items()} == {
        PERSON: "Person",
        "https://lms.example.org/terms/2024fa/courses/12/sections/3/assess/2": "Assessment",
        "https://lms.example.org": "SoftwareApplication",
        "https://lms.example.org/terms/2024fa/courses/12/sections/3": "CourseSection",
    }
    section = entities["https://lms.example.org/terms/2024fa/courses/12/sections/3"].fields
    assert section["name"] == "Applied Statistics, Section 03"
    assert section["date_created"] == parse_time("2024-08-15T07:00:00.000Z")
    assert section["sensor"] == ENVELOPE["sensor"] and section["send_time"] == parse_time(ENVELOPE["sendTime"])
    assert section["entity"] == ENVELOPE["data"][3]
    assert entities[PERSON].fields["date_modified"] == parse_time("2024-09-01T12:15:00.000Z")
    assert out.unknown_fields == []


def test_the_latest_describe_by_send_time_wins_per_column_in_any_order():
    later = copy.deepcopy(ENVELOPE)
    later["sendTime"] = "2024-10-03T09:30:00.000Z"
    later["data"] = [dict(ENVELOPE["data"][0], name="Ada Example", dateModified="2024-10-03T08:00:00.000Z")]
    changes = [c for env in (ENVELOPE, later) for c in normalize(record(env), IDS).changes]
    for order in (changes, changes[::-1]):
        person = next(m for m in collapse(order) if m.key == {"id": PERSON})
        assert person.fields["name"] == "Ada Example"
        assert person.fields["date_modified"] == parse_time("2024-10-03T08:00:00.000Z")
        assert person.fields["send_time"] == parse_time(later["sendTime"])
        assert person.fields["date_created"] == parse_time("2024-08-20T08:00:00.000Z")


def test_what_is_an_entity():
    assert is_entity({"id": "x", "type": "Person"})
    assert not is_entity({"id": "x", "type": "Person", "action": "Created"})
    assert not is_entity({"id": "x", "type": "Person", "eventTime": "2024-01-01T00:00:00Z"})
    assert not is_entity({"id": "x", "type": "SessionEvent"})
    assert not is_entity({"type": "Person"})  # no id: not keyable, kept as an event row as before
    assert not is_entity({"id": "", "type": "Person"})


def test_an_entity_without_an_id_or_with_a_bad_time_is_still_kept():
    envelope = {"sensor": "s", "sendTime": "not a time", "dataVersion": "v",
                "data": [{"type": "Person"}, {"id": "p", "type": "Person", "dateCreated": "yesterday"}]}
    out = normalize(record(envelope), IDS)
    assert [e.event_name for e in out.events] == ["caliper:Person/None"]
    assert [(c.table, c.key, c.fields["send_time"]) for c in out.changes] == [("caliper_entities", {"id": "p"}, None)]
    assert sorted(out.unknown_fields) == ["caliper:entity.dateCreated:invalid", "caliper:envelope.sendTime:invalid"]
