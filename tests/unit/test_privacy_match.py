"""The matching rule of erasure, the screening of events and the keyed hashes of pseudonymization,
without a database."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.batch import Item, PreparedBatch
from processors.normalize.canvas import PINNED_ID_KEY, canvas_event_id
from processors.normalize.model import EventRow, Normalized, RowChange, make_version
from processors.privacy.erasure import prefilter
from processors.privacy.guard import FIND_LIMIT, ErasureGuard, _raw_pattern
from processors.privacy.match import ERASED, Matcher, Person, decode_jws_claims, id_forms, stored_forms
from processors.privacy.pseudonymize import Pseudonymizer
from processors.privacy.screen import screen
from processors.warehouse.schema import Personal

SHARD = 2107
LOCAL = 4811
GLOBAL = SHARD * 10**13 + LOCAL
PERSON = Person(LOCAL, GLOBAL, frozenset({"sam.lee@example.edu", "slee", "0f9e8d7c6b5a49382716abcdefabcdef12"}),
                frozenset({"Samantha Lee"}))
M = Matcher.of([PERSON])
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def jws(claims: dict) -> str:
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'RS256', 'kid': 'k1'})}.{b64(claims)}.c2lnbmF0dXJlc2lnbmF0dXJl"


def test_id_forms():
    assert id_forms(GLOBAL, None) == (LOCAL, GLOBAL)
    assert id_forms(LOCAL, SHARD) == (LOCAL, GLOBAL)
    assert id_forms(LOCAL, None) == (LOCAL, None)
    assert PERSON.id_texts() == {str(LOCAL), str(GLOBAL), f"{SHARD}~{LOCAL}"}


def test_ids_match_at_user_positions_in_every_form():
    payload = {
        "metadata": {"user_id": str(GLOBAL), "real_user_id": LOCAL, "user_login": "slee", "client_ip": "10.1.2.3",
                     "user_agent": "Firefox", "session_id": "abc", "context_id": str(LOCAL), "context_type": "Course",
                     "url": f"https://x.instructure.com/courses/{LOCAL}/users/{SHARD}~{LOCAL}?user_id={LOCAL}&page=2"},
        "body": {"grader_id": GLOBAL, "user_ids": [1, LOCAL, 2], "course_id": LOCAL, "score": LOCAL,
                 "user": {"id": str(LOCAL), "name": "Samantha Lee", "email": "sam.lee@example.edu"},
                 "actor": {"id": f"urn:instructure:canvas:user:{GLOBAL}", "type": "Person"},
                 "membership": f"urn:instructure:canvas:course:{GLOBAL}:Learner:{GLOBAL}",
                 "asset_id": LOCAL, "asset_type": "user", "asset_name": "Samantha Lee"},
    }
    out, found = M.redact(payload)
    meta, body = out["metadata"], out["body"]
    assert meta["user_id"] is None and meta["real_user_id"] is None
    assert meta["user_login"] is None and meta["client_ip"] is None and meta["user_agent"] is None  # the actor's
    assert meta["context_id"] == str(LOCAL)  # a course with the same number is not the person
    assert meta["url"] == f"https://x.instructure.com/courses/{LOCAL}/users/{ERASED}?user_id={ERASED}&page=2"
    assert body["grader_id"] is None and body["user_ids"] == [1, 2]
    assert body["course_id"] == LOCAL and body["score"] == LOCAL
    assert body["user"] == {"id": None, "name": None, "email": None}
    assert body["actor"]["id"] is None or ERASED in body["actor"]["id"]
    assert body["membership"] == ERASED or body["membership"].endswith(f":Learner:{ERASED}")
    assert body["asset_id"] is None and body["asset_name"] is None
    assert found.count >= 10
    assert payload["metadata"]["user_id"] == str(GLOBAL)  # the input is not changed


def test_other_objects_with_the_same_number_are_left_alone():
    payload = {"course_id": GLOBAL, "context_id": GLOBAL, "context_type": "Course", "id": GLOBAL,
               "object": {"id": f"urn:instructure:canvas:course:{GLOBAL}"}, "url": f"/courses/{LOCAL}/assignments/1",
               "text": f"score {LOCAL} of {GLOBAL}", "user": {"id": 99, "name": "Someone Else"}}
    out, found = M.redact(payload)
    assert out == payload and found.count == 0


def test_names_only_where_the_person_is_otherwise_named():
    unlinked = {"message": "Thanks Samantha Lee for the notes"}
    assert M.redact(unlinked, names=True)[0] == unlinked  # another Samantha Lee may exist
    linked = {"user_id": LOCAL, "message": "Thanks Samantha Lee for the notes"}
    out, _ = M.redact(linked, names=True)
    assert out["message"] == f"Thanks {ERASED} for the notes"


def test_identifiers_are_whole_words_and_short_ones_whole_values():
    out, _ = M.redact({"a": "mail sam.lee@example.edu now", "b": "slee", "c": "sleeping", "d": "xslee"})
    assert out == {"a": f"mail {ERASED} now", "b": ERASED, "c": "sleeping", "d": "xslee"}


def test_tokens_that_name_the_person_are_dropped():
    naming, other = jws({"sub": "x", "user_id": LOCAL}), jws({"sub": "y", "user_id": 5})
    assert decode_jws_claims(naming) == {"sub": "x", "user_id": LOCAL}
    out, found = M.redact({"raw": naming, "other": other})
    assert out == {"raw": None, "other": other} and found.count == 1
    assert decode_jws_claims("not.a.token") is None


USER_KEYS = st.sampled_from(["user_id", "grader_id", "author_id", "associated_user_id", "real_user_id",
                             "student_id", "observer_user_id"])
FORMS = st.sampled_from([GLOBAL, LOCAL, str(GLOBAL), str(LOCAL), f"{SHARD}~{LOCAL}",
                         f"urn:instructure:canvas:user:{GLOBAL}"])
OTHER_KEYS = st.sampled_from(["course_id", "assignment_id", "score", "position", "id", "context_id"])
leaves = st.one_of(st.integers(0, 10**6).filter(lambda n: n != LOCAL), st.text(max_size=8),
                   st.just(None), st.booleans())
trees = st.recursive(
    st.dictionaries(st.one_of(OTHER_KEYS, st.text(min_size=1, max_size=5)), leaves, max_size=4),
    lambda children: st.dictionaries(st.text(min_size=1, max_size=6), children, max_size=3), max_leaves=12)


@settings(max_examples=150)
@given(trees, st.lists(st.tuples(USER_KEYS, FORMS), min_size=1, max_size=4), st.data())
def test_after_redaction_no_user_position_holds_the_person(tree, mentions, data):
    # put each mention at a random dict of the tree
    dicts = []

    def collect(node):
        if isinstance(node, dict):
            dicts.append(node)
            for v in node.values():
                collect(v)
    collect(tree)
    for key, form in mentions:
        data.draw(st.sampled_from(dicts))[key] = form
    out, found = M.redact(tree)
    assert found.count >= 1

    def check(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in {key for key, _ in mentions}:
                    assert not M.is_id(v), (k, v)
                check(v)
    check(out)
    again, found_again = M.redact(out)
    assert again == out and found_again.count == 0  # idempotent
    # the cheap prefilters (raw bytes in the worker, SQL in erase) see every payload that names the person
    raw = json.dumps(tree, ensure_ascii=False).encode()
    assert _raw_pattern(M).search(raw)
    as_jsonb = json.dumps(tree, ensure_ascii=False, separators=(", ", ": "))
    assert re.search(prefilter(M, json_text=True), as_jsonb, re.IGNORECASE)


def test_screen_drops_events_about_the_person_and_redacts_the_others():
    about = EventRow("e1", "grade_change", "canvas", T0, T0, 77, "Course", 1,
                     {"metadata": {"user_id": 77}, "body": {"user_id": LOCAL, "grader_id": 77}})
    graded_by = EventRow("e2", "grade_change", "canvas", T0, T0, GLOBAL, "Course", 1,
                         {"metadata": {"user_id": str(GLOBAL), "client_ip": "1.2.3.4"},
                          "body": {"user_id": 55, "grader_id": str(GLOBAL)}})
    unrelated = EventRow("e3", "course_updated", "canvas", T0, T0, 55, "Course", 1, {"body": {"course_id": LOCAL}})
    changes = [
        RowChange("submissions", {"id": 1}, {"user_id": LOCAL, "grader_id": 77}, make_version(T0, "e1")),
        RowChange("grade_changes", {"happening_id": "h1"}, {"event_id": "e1", "user_id": LOCAL},
                  make_version(T0, "e1")),
        RowChange("submissions", {"id": 2}, {"user_id": 55, "grader_id": GLOBAL}, make_version(T0, "e2")),
        RowChange("courses", {"id": LOCAL}, {"name": "Algebra"}, make_version(T0, "e3")),
    ]
    result = screen(Normalized(events=[about, graded_by, unrelated], changes=changes), M)
    assert result.dropped == ["e1"] and result.redacted == ["e2"]
    events = {e.event_id: e for e in result.normalized.events}
    assert set(events) == {"e2", "e3"}
    assert events["e2"].user_id is None and events["e2"].payload["metadata"]["client_ip"] is None
    assert events["e2"].payload["canvas_stream_event_id"] == "e2"  # replay finds the same id
    assert events["e2"].payload_json is None  # the writer encodes the redacted payload, not the received text
    assert events["e3"] is unrelated
    kept = {c.key["id"]: c for c in result.normalized.changes}
    assert set(kept) == {2, LOCAL} and kept[2].fields["grader_id"] is None and kept[2].fields["user_id"] == 55


def test_pseudonyms_are_keyed_stable_and_never_the_value():
    p = Pseudonymizer(b"k" * 32)
    q = Pseudonymizer(b"j" * 32)
    ip = p.pseudonym("93.184.216.34", Personal.IP_ADDRESS)
    assert re.fullmatch(r"hmac:[0-9a-f]{32}", ip) and ip == p.pseudonym("93.184.216.34", Personal.IP_ADDRESS)
    assert ip != q.pseudonym("93.184.216.34", Personal.IP_ADDRESS)
    assert p.pseudonym("Sam@X.edu", Personal.EMAIL) == p.pseudonym("sam@x.edu", Personal.EMAIL)
    assert p.pseudonym(ip, Personal.IP_ADDRESS) == ip  # a retried quarantined record is not hashed twice
    assert "k" * 32 not in repr(p)
    out = p.json({"metadata": {"client_ip": "1.2.3.4", "user_agent": "UA", "user_login": "sam", "user_id": 5},
                  "body": {"text": "write to sam@x.edu", "user": {"email": "sam@x.edu"}}, "raw": jws({"a": 1})})
    assert out["metadata"]["user_id"] == 5
    for value in (out["metadata"]["client_ip"], out["metadata"]["user_agent"], out["metadata"]["user_login"],
                  out["body"]["user"]["email"]):
        assert value.startswith("hmac:")
    assert "sam@x.edu" not in json.dumps(out) and out["raw"] is None


def test_pseudonymized_rows_and_payloads_agree():
    p = Pseudonymizer(b"s" * 40)
    row = EventRow("e1", "logged_in", "canvas", T0, T0, 5, None, None,
                   {"metadata": {"client_ip": "1.2.3.4", "user_agent": "UA"}, "body": {}})
    change = RowChange("logins", {"happening_id": "e1"},
                       {"client_ip": "1.2.3.4", "user_agent": "UA", "session_id": "s", "user_login": "Sam"},
                       make_version(T0, "e1"))
    out = p.normalized(Normalized(events=[row], changes=[change]))
    [event], [fact] = out.events, out.changes
    assert event.payload["metadata"]["client_ip"] == fact.fields["client_ip"] != "1.2.3.4"
    assert fact.fields["session_id"] == "s"
    assert fact.fields["user_login"] == p.pseudonym("sam", Personal.LOGIN)
    assert event.payload["canvas_stream_event_id"] == "e1" and event.payload_json is None
    notice = RowChange("lti_notices", {"notice_id": "n"}, {"jwt": "a.b.c", "claims": {"email": "a@b.cd"}},
                       make_version(T0, "lti-notice:n"))
    redacted = p.change(notice)
    assert redacted.fields["jwt"] is None and redacted.fields["claims"]["email"].startswith("hmac:")


def test_settings_refuse_pseudonymization_without_a_key_and_never_show_it(monkeypatch):
    from pydantic import ValidationError

    from canvas_stream.settings import Settings

    key = "a-test-key-of-at-least-32-bytes-long!"
    monkeypatch.setenv("PSEUDONYMIZE", "true")
    with pytest.raises(ValidationError, match="pseudonymization_key"):
        Settings()
    monkeypatch.setenv("PSEUDONYMIZATION_KEY", "too short")
    with pytest.raises(ValidationError, match="pseudonymization_key"):
        Settings()
    monkeypatch.setenv("PSEUDONYMIZATION_KEY", key)
    settings = Settings()
    assert settings.pseudonymization_secret() == key.encode()
    assert settings.masked()["pseudonymization_key"] == "***"
    assert key not in repr(settings) and key not in str(settings.masked())
    monkeypatch.setenv("PSEUDONYMIZE", "false")
    assert Settings().pseudonymization_secret() is None  # a key alone turns nothing on


def test_id_columns_match_the_stored_form_only():
    """A home-shard user is stored local: another shard's user whose global id ends in the same
    digits is not them (ids.py), while payloads are matched in every form."""
    home = Person(LOCAL, GLOBAL, stored=stored_forms(LOCAL, GLOBAL, SHARD))
    other_shard = Person(LOCAL, GLOBAL, stored=stored_forms(LOCAL, GLOBAL, 9))
    unset = Person(LOCAL, GLOBAL, stored=stored_forms(LOCAL, GLOBAL, None))
    assert home.stored_ids() == {LOCAL} and other_shard.stored_ids() == {GLOBAL} and unset.stored_ids() == {
        LOCAL, GLOBAL}
    m = Matcher.of([home])
    assert m.column_matches(LOCAL) and not m.column_matches(GLOBAL) and not m.column_matches(str(LOCAL))
    assert m.column_matches(f"urn:instructure:canvas:user:{GLOBAL}")  # a text column keyed by a URN
    assert m.redact({"user_id": GLOBAL})[0] == {"user_id": None}  # in payloads, either form
    assert stored_forms(LOCAL, None, SHARD) == {LOCAL}


def test_screen_redacts_the_arrival_token_and_the_acting_user_columns():
    claims = {"sub": "lti-1", "user_id": LOCAL}
    row = EventRow("e9", "course_updated", "canvas", T0, T0, GLOBAL, "Course", 1,
                   {"metadata": {"user_id": GLOBAL, "user_login": "slee"}, "body": {"course_id": 3}},
                   real_user_id=GLOBAL, user_login="slee", user_sis_id="S-1",
                   arrival={"source": "live_event", "raw": jws(claims)})
    result = screen(Normalized(events=[row], changes=[
        RowChange("courses", {"id": 3}, {"name": "Algebra"}, make_version(T0, "e9"))]), M)
    [kept] = result.normalized.events
    assert (kept.user_id, kept.real_user_id, kept.user_login, kept.user_sis_id) == (None, None, None, None)
    assert kept.arrival == {"source": "live_event", "raw": None}
    assert result.redacted == ["e9"] and [c.table for c in result.normalized.changes] == ["courses"]


def test_a_pinned_event_id_survives_a_rewritten_payload():
    payload = {"metadata": {"event_name": "x", "user_id": "5"}, "body": {"a": 1}}
    original = canvas_event_id(payload)
    rewritten = {**payload, "metadata": {"event_name": "x", "user_id": None}, PINNED_ID_KEY: original}
    assert canvas_event_id(rewritten) == original
    assert canvas_event_id({**payload, PINNED_ID_KEY: "not-a-hash"}) == original


def test_the_guard_is_free_with_nobody_erased_and_finds_people_beyond_the_find_limit():
    guard = ErasureGuard()
    batch = PreparedBatch([Item(b'{"user_id": 4811}')])
    guard.screen_batch(batch)  # nobody erased: nothing happens, nothing is counted
    assert not guard.counts and guard._pattern is None
    many = [Person(n, SHARD * 10**13 + n, frozenset({f"{n:08x}-aaaa-bbbb-cccc-dddddddddddd"}))
            for n in range(10_000, 10_000 + FIND_LIMIT)]
    for people in (many[:3], many):  # bytes.find per needle, then the set of tokens
        guard.use(people, len(people))
        assert bool(guard._needles) is (2 * len(people) <= FIND_LIMIT)  # a local id and a uuid each
        last = people[-1]
        assert guard.names_someone(f'{{"grader_id": "{last.global_id}"}}'.encode())
        assert guard.names_someone(f'/courses/1/users/{SHARD}~{last.local_id}?x=1'.encode())
        assert guard.names_someone(f'{{"sub": "{next(iter(last.identifiers)).upper()}"}}'.encode())
        assert not guard.names_someone(b'{"user_id": 99, "course_id": 1000000}')
        assert not guard.names_someone(f'{{"score": {last.local_id}1}}'.encode())
