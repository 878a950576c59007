"""Events that name a person in every way Canvas does, for the erasure tests, and the scan that looks for
them in every column of a warehouse.

Each scenario is one delivery (a canvas-stream record, as the ingress publishes it) placing the
person in one role: the row's own person (enrollment, page view, submission, post, login, course
progress, outcome result), another person's row naming them (grader, observer, masquerading
admin, a profile page view, an LTI notice's subject), in both event formats, with ids in every
form (global, local, ``shard~local``, URN, URL), a Caliper entity describe of them, an LTI notice
with its token, plus raw messages the worker quarantines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from canvas_stream.records import Record, Verification
from processors.privacy.match import decode_jws_claims
from processors.warehouse import tables
from processors.warehouse.schema import TABLE_SPECS, Kind
from tests.support.corpus import CORPUS

SHARD = 2107
FACTOR = 10**13
URN = "urn:instructure:canvas:"


@dataclass(frozen=True)
class Someone:
    local: int
    name: str
    login: str
    email: str
    sis: str
    uuid: str
    lti: str

    @property
    def global_id(self) -> int:
        return SHARD * FACTOR + self.local

    def form(self, choice: int) -> int | str:
        """The id in one of the forms live events carry: global or local, number or string (the API's
        ``shard~local`` form appears in URLs, see the scenarios)."""
        return [self.global_id, self.local, str(self.global_id), str(self.local)][choice % 4]


@cache
def corpus_digit_runs() -> frozenset[str]:
    """Every digit run in the corpus: a person's id must not equal one, or a check would mistake it."""
    runs: set[str] = set()
    for path in CORPUS.rglob("*.json"):
        runs.update(re.findall(r"\d+", path.read_text()))
    return frozenset(runs)


def someone(local: int, tag: str) -> Someone:
    digest = hashlib.sha256(f"{tag}{local}".encode()).hexdigest()
    first = "".join(chr(ord("a") + int(c, 16) % 26) for c in digest[:6]).capitalize()
    last = "".join(chr(ord("a") + int(c, 16) % 26) for c in digest[6:13]).capitalize()
    return Someone(local, f"{first} {last}", f"{first.lower()}{local}", f"{first.lower()}.{last.lower()}@example.edu",
                   f"SIS{digest[13:19]}", str(uuid.UUID(digest[20:52])), hashlib.sha1(digest.encode()).hexdigest())


def meta(name: str, when: datetime, actor: Someone | None, form: int, **extra) -> dict:
    meta = {"event_name": name, "event_time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "root_account_id": str(SHARD * FACTOR + 1), "hostname": "school.instructure.com",
            "request_id": hashlib.md5(f"{name}{when}".encode()).hexdigest()}
    if actor is not None:
        meta.update(user_id=str(actor.form(form)), user_login=actor.login, user_sis_id=actor.sis,
                    client_ip="198.51.100.23", user_agent="Mozilla/5.0 (X11) Firefox/128.0",
                    session_id=hashlib.md5(actor.login.encode()).hexdigest())
    meta.update(extra)
    return meta


def canvas(meta: dict, body: dict, received: datetime) -> bytes:
    return Record("live_event", "canvas", received.isoformat(), {"metadata": meta, "body": body},
                  Verification(signed=True, kid="k")).to_bytes()


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def token(claims: dict) -> str:
    return f"{_b64({'alg': 'RS256', 'kid': 'k'})}.{_b64(claims)}.{_b64({'sig': 'x' * 20})}"


def scenarios(p: Someone, others: list[Someone], when: datetime, form: int, course: int) -> dict[str, bytes]:
    """Every way an event names ``p``; ``others`` are the other people in them."""
    a, b, c = others[0], others[1], others[2]
    t = [when + timedelta(seconds=i) for i in range(40)]
    received = when + timedelta(minutes=5)
    course_s = str(SHARD * FACTOR + course)
    course_meta = {"context_type": "Course", "context_id": course_s}
    out: dict[str, bytes] = {}
    out["user_updated"] = canvas(meta("user_updated", t[0], None, form), {
        "user_id": str(p.form(form)), "name": p.name, "short_name": p.name.split()[0],
        "sortable_name": ", ".join(reversed(p.name.split())), "uuid": p.uuid, "user_login": p.login,
        "user_sis_id": p.sis, "workflow_state": "registered"}, received)
    out["enrollment"] = canvas(meta("enrollment_created", t[1], a, form, context_type="Course", context_id=course_s), {
        "enrollment_id": str(SHARD * FACTOR + 9100 + course), "course_id": course_s, "user_id": str(p.form(form + 1)),
        "user_name": p.name, "type": "StudentEnrollment", "workflow_state": "active"}, received)
    out["observer"] = canvas(meta("enrollment_created", t[2], a, form, context_type="Course", context_id=course_s), {
        "enrollment_id": str(SHARD * FACTOR + 9200 + course), "course_id": course_s, "user_id": str(b.global_id),
        "user_name": b.name, "type": "ObserverEnrollment", "associated_user_id": str(p.form(form + 2)),
        "workflow_state": "active"}, received)
    out["submission"] = canvas(meta("submission_created", t[3], p, form + 3), {
        "submission_id": str(SHARD * FACTOR + 5100 + course), "assignment_id": str(SHARD * FACTOR + 700),
        "user_id": str(p.form(form)), "lti_user_id": p.lti, "submission_type": "online_text_entry",
        "body": f"My essay, by {p.name} ({p.email})", "workflow_state": "submitted"}, received)
    out["comment_on_it"] = canvas(meta("submission_comment_created", t[4], a, form), {
        "submission_comment_id": str(SHARD * FACTOR + 6100 + course),
        "submission_id": str(SHARD * FACTOR + 5100 + course),
        "user_id": str(a.global_id), "body": "Well argued.", "created_at": "2024-05-01T10:00:00Z"}, received)
    out["graded"] = canvas(meta("grade_change", t[5], a, form, context_type="Course", context_id=course_s), {
        "submission_id": str(SHARD * FACTOR + 5100 + course), "assignment_id": str(SHARD * FACTOR + 700),
        "user_id": str(p.form(form + 1)), "student_id": str(p.form(form + 1)), "student_sis_id": p.sis,
        "grader_id": str(a.global_id), "score": 9, "old_score": 4, "grade": "9"}, received)
    out["grades_others"] = canvas(meta("grade_change", t[6], p, form + 2, **course_meta), {
        "submission_id": str(SHARD * FACTOR + 5200 + course), "assignment_id": str(SHARD * FACTOR + 700),
        "user_id": str(c.global_id), "student_id": str(c.global_id), "student_sis_id": c.sis,
        "grader_id": str(p.form(form + 4)), "score": 7, "grade": "7"}, received)
    out["page_view"] = canvas(meta("asset_accessed", t[7], p, form + 1, context_type="Course", context_id=course_s,
                                    url=f"https://school.instructure.com/courses/{course}/users/{p.local}"), {
        "asset_id": course_s, "asset_type": "course", "asset_subtype": "grades", "category": "grades",
        "role": "StudentEnrollment", "level": None}, received)
    profile = f"https://school.instructure.com/courses/{course}/users/{SHARD}~{p.local}"
    out["profile_viewed"] = canvas(meta("asset_accessed", t[8], a, form, url=profile, **course_meta), {
        "asset_id": str(p.form(form + 5)), "asset_type": "user", "asset_name": p.name, "role": "TeacherEnrollment"},
        received)
    out["login"] = canvas(meta("logged_in", t[9], p, form + 4, url="https://school.instructure.com/login"), {
        "redirect_url": f"https://school.instructure.com/users/{p.local}/dashboard"}, received)
    out["progress"] = canvas(meta("course_progress", t[10], None, form), {
        "course": {"id": str(course), "name": "Biology", "account_id": "1"},
        "user": {"id": str(p.local), "name": p.name, "email": p.email},
        "progress": {"requirement_count": 5, "requirement_completed_count": 2,
                     "next_requirement_url": f"https://school.instructure.com/courses/{course}/modules/items/3"}},
        received)
    out["post"] = canvas(meta("discussion_entry_created", t[11], p, form, **course_meta), {
        "discussion_entry_id": str(SHARD * FACTOR + 4400 + course), "discussion_topic_id": str(SHARD * FACTOR + 440),
        "user_id": str(p.form(form + 2)), "text": f"<p>I am {p.name}, mail me at {p.email}</p>"}, received)
    out["masquerade"] = canvas(meta("course_updated", t[12], b, form, real_user_id=str(p.form(form + 3))), {
        "course_id": course_s, "name": "Biology 101", "workflow_state": "available"}, received)
    out["outcome"] = canvas(meta("learning_outcome_result_created", t[13], None, form), {
        "learning_outcome_id": "12", "user_uuid": p.uuid, "score": 3, "possible": 5, "mastery": False,
        "attempt": 1}, received)
    out["caliper_login"] = Record("live_event", "caliper", received.isoformat(), {
        "sensor": "http://oxana.instructure.com/", "sendTime": "2024-05-01T10:00:00Z", "dataVersion": "x",
        "data": [{"@context": "http://purl.imsglobal.org/ctx/caliper/v1p1", "id": f"urn:uuid:{p.uuid[:8]}-{form}-login",
                  "type": "SessionEvent", "action": "LoggedIn", "eventTime": t[14].isoformat().replace("+00:00", "Z"),
                  "actor": {"id": f"{URN}user:{p.global_id}", "type": "Person",
                            "extensions": {"com.instructure.canvas": {"user_login": p.login, "user_sis_id": p.sis,
                                                                       "entity_id": str(p.global_id)}}},
                  "object": {"id": "urn:instructure:canvas:root_account:1", "type": "SoftwareApplication"},
                  "session": {"id": f"{URN}session:{hashlib.md5(p.login.encode()).hexdigest()}", "type": "Session"},
                  "extensions": {"com.instructure.canvas": {"client_ip": "198.51.100.23", "user_agent": "Firefox",
                                                            "request_url": "https://school.instructure.com/login"}}}],
    }, Verification(signed=True, kid="k")).to_bytes()
    out["caliper_membership"] = Record("live_event", "caliper", received.isoformat(), {
        "sensor": "http://oxana.instructure.com/", "sendTime": "2024-05-01T10:00:00Z", "dataVersion": "x",
        "data": [{"id": f"urn:uuid:{p.uuid[:8]}-{form}-nav", "type": "NavigationEvent", "action": "NavigatedTo",
                  "eventTime": t[15].isoformat().replace("+00:00", "Z"),
                  "actor": {"id": f"{URN}user:{a.global_id}", "type": "Person"},
                  "object": {"id": f"{URN}user:{p.global_id}", "type": "Entity", "name": "profile",
                             "extensions": {"com.instructure.canvas": {
                                 "asset_type": "user", "asset_name": p.name, "entity_id": str(p.global_id)}}},
                  "membership": {"id": f"{URN}course:{course_s}:Learner:{p.global_id}", "type": "Membership",
                                 "member": {"id": f"{URN}user:{p.global_id}", "type": "Person"}}}],
    }, Verification(signed=True, kid="k")).to_bytes()
    out["caliper_person"] = Record("live_event", "caliper", received.isoformat(), {  # an entity describe, no event
        "sensor": "http://oxana.instructure.com/", "sendTime": t[17].isoformat().replace("+00:00", "Z"),
        "dataVersion": "x",
        "data": [{"id": f"{URN}user:{p.global_id}", "type": "Person", "name": p.name,
                  "extensions": {"com.instructure.canvas": {"user_login": p.login, "entity_id": str(p.global_id)}}}],
    }, Verification(signed=True, kid="k")).to_bytes()
    claims = {"iss": "https://canvas.instructure.com", "aud": "tool", "sub": p.lti, "name": p.name, "email": p.email,
              "https://purl.imsglobal.org/spec/lti/claim/deployment_id": "dep:1",
              "https://purl.imsglobal.org/spec/lti/claim/notice": {
                  "id": f"n-{p.uuid[:12]}-{form}", "type": "LtiHelloWorldNotice",
                  "timestamp": t[16].isoformat().replace("+00:00", "Z")}}
    out["lti_notice"] = Record("lti_notice", "lti_notice", received.isoformat(), claims,
                               Verification(signed=True, kid="k"), raw=token(claims)).to_bytes()
    # Authentic but unusable (no event time): quarantined with the raw token that encodes it all.
    broken = {"metadata": {"event_name": "submission_updated", "user_id": str(p.global_id), "user_login": p.login},
              "body": {"user_id": str(p.local), "body": f"{p.name} {p.email}"}}
    out["quarantined"] = Record("live_event", "canvas", received.isoformat(), broken,
                                Verification(signed=True, kid="k"), raw=token(broken)).to_bytes()
    return out


def unrelated(others: list[Someone], when: datetime, course: int) -> list[bytes]:
    """Events of other people only: erasure must leave their rows as they were."""
    a, b = others[0], others[1]
    received = when + timedelta(minutes=5)
    course_s = str(SHARD * FACTOR + course)
    return [
        canvas(meta("asset_accessed", when, a, 0, context_type="Course", context_id=course_s), {
            "asset_id": course_s, "asset_type": "course"}, received),
        canvas(meta("enrollment_created", when + timedelta(seconds=1), b, 0), {
            "enrollment_id": str(SHARD * FACTOR + 9900 + course), "course_id": course_s, "user_id": str(a.global_id),
            "user_name": a.name, "type": "StudentEnrollment"}, received),
        canvas(meta("logged_in", when + timedelta(seconds=2), b, 0), {}, received),
    ]


def at(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(microsecond=0)


# The suppression list keeps the person's ids and opaque ids by design (docs/privacy.md).
SUPPRESSION_IDS = {("erased_users", c) for c in ("global_id", "local_id", "stored_ids", "identifiers")}


def findings(value: str, p: Someone, *, ids: bool = True, opaque: bool = True) -> list[str]:
    """What in a text names ``p``: ids as digit runs (either form), login, email, name, SIS id; uuid and
    LTI id too unless told; signed tokens decoded."""
    found = []
    if ids and re.search(rf"(?<!\d)({p.global_id}|{p.local})(?!\d)", value):
        found.append("id")
    lowered = value.lower()
    for label, needle in [("login", p.login), ("email", p.email), ("name", p.name), ("sis id", p.sis),
                          ("sortable name", ", ".join(reversed(p.name.split())))]:
        if needle.lower() in lowered:
            found.append(label)
    if opaque:
        found += [label for label, needle in [("uuid", p.uuid), ("lti id", p.lti)] if needle.lower() in lowered]
    for word in re.findall(r"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*", value):
        claims = decode_jws_claims(word)
        if claims is not None:
            found += [f"token: {f}" for f in findings(json.dumps(claims), p, ids=ids, opaque=opaque)]
    return found


async def scan(engine: AsyncEngine, p: Someone) -> list[str]:
    """Every place in the warehouse that still names ``p``."""
    problems = []
    async with engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            spec = TABLE_SPECS[table.name]
            person_columns = {c.name: c.person.when for c in spec.all_columns()
                              if c.person is not None and c.kind is Kind.ID}
            for row in (await conn.execute(select(table))).mappings():
                for column in spec.all_columns():
                    value = row[column.name]
                    if value is None or (table.name, column.name) in SUPPRESSION_IDS:
                        continue
                    if column.kind in (Kind.TEXT, Kind.JSON):
                        text_value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                        for what in findings(text_value, p):
                            problems.append(f"{table.name}.{column.name}: {what}: {text_value[:160]}")
                    elif column.name in person_columns and value in (p.global_id, p.local) and (
                            person_columns[column.name] is None  # a user's id only when the row says so
                            or str(row[person_columns[column.name][0]]).lower()
                            == person_columns[column.name][1].lower()):
                        problems.append(f"{table.name}.{column.name} = {value}")
    return problems
