"""LTI PNS notices (verified claims) to an event row and row changes. Pure: no I/O.

Every notice, known type or not, becomes an ``events`` row and an ``lti_notices`` row
keyed by ``notice.id`` (so a repeated delivery is a no-op). The documented types also feed typed
tables. Versions are (notice timestamp, iat, notice id): Canvas's "Resubmit All Files" sends the
same submission under a new notice id, possibly with the same timestamp, and the later-issued
notice must win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_stream.formats import CLAIM_DEPLOYMENT_ID, CLAIM_NOTICE, FORMAT_LTI_NOTICE
from canvas_stream.formats import LTI_CLAIM as CLAIM
from canvas_stream.records import Record, arrival_of

from .model import EventRow, NormalizationError, Normalized, RowChange, history_time, make_version, parse_time

HELLO_WORLD = "LtiHelloWorldNotice"
CONTEXT_COPY = "LtiContextCopyNotice"
AP_SUBMISSION = "LtiAssetProcessorSubmissionNotice"
AP_CONTRIBUTION = "LtiAssetProcessorContributionNotice"
KNOWN_TYPES = frozenset({HELLO_WORLD, CONTEXT_COPY, AP_SUBMISSION, AP_CONTRIBUTION})

_COURSE_TYPES = ("CourseOffering", "CourseSection", "CourseTemplate", "Course")


def _obj(claims: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = claims.get(CLAIM + name)
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _context_type(context: Mapping[str, Any]) -> str | None:
    """Course for the IMS course vocabulary, Account for Canvas's non-standard account context."""
    types = context.get("type")
    names = [t for t in types if isinstance(t, str)] if isinstance(types, list) else []
    for name in names:
        if name.endswith(_COURSE_TYPES):
            return "Course"
        if name in ("Account", "Group"):
            return name
    return names[0][:200] if names else None


def _client_id(record: Record) -> str | None:
    """The client id the ingress checked against; else azp, else a single aud."""
    configured = record.extra.get("client_id") if isinstance(record.extra, dict) else None
    if isinstance(configured, str) and configured:
        return configured
    claims = record.payload
    aud = claims.get("aud")
    return _text(claims.get("azp")) or _text(aud) or (_text(aud[0]) if isinstance(aud, list) and aud else None)


def _iat(claims: Mapping[str, Any]) -> int:
    value = claims.get("iat")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 10**12:
        return int(value)
    return 0


def normalize_notice(record: Record) -> Normalized:
    """One verified notice record -> events + lti_notices (+ the typed table of its type)."""
    claims = record.payload
    notice = claims.get(CLAIM_NOTICE)
    if not isinstance(notice, dict):
        raise NormalizationError("LTI notice without a notice claim")
    notice_id = _text(notice.get("id"))
    notice_type = _text(notice.get("type"))
    if notice_id is None or notice_type is None:
        raise NormalizationError("LTI notice without notice.id or notice.type")
    notice_time = parse_time(notice.get("timestamp"))
    deployment_id = _text(claims.get(CLAIM_DEPLOYMENT_ID))
    context = _obj(claims, "context")
    context_id = _text(context.get("id"))
    context_type = _context_type(context)
    client_id = _client_id(record)
    received_at = record.received_datetime

    event_id = f"lti-notice:{notice_id}"
    version = make_version(notice_time, f"{_iat(claims):012d}|{event_id}")
    out = Normalized()
    out.events.append(
        EventRow(
            event_id=event_id,
            event_name=notice_type,
            format=FORMAT_LTI_NOTICE,
            event_time=history_time(notice_time),
            received_at=received_at,
            user_id=None,  # LTI user ids are opaque strings, not Canvas ids (see lti_notices.user_sub)
            context_type=context_type,
            context_id=None,  # likewise: the LTI context id is kept as text in the LTI tables
            payload=claims,
            payload_json=record.payload_json,
            happening_id=event_id,  # one notice id, one notice: no other delivery format to correlate
            arrival=arrival_of(record, with_raw=True),  # the JWT, kid and client id lti_notices keeps
        )
    )

    def change(table: str, key: dict[str, Any], fields: dict[str, Any]) -> None:
        out.changes.append(RowChange(table=table, key=key, fields=fields, version=version))

    change("lti_notices", {"notice_id": notice_id}, {
        "notice_type": notice_type,
        "issuer": _text(claims.get("iss")),
        "client_id": client_id,
        "deployment_id": deployment_id,
        "context_id": context_id,
        "context_type": context_type,
        "user_sub": _text(claims.get("sub")),
        "notice_timestamp": notice_time,
        "received_at": received_at,
        "kid": record.verification.kid,
        "claims": claims,
        "jwt": record.raw,
    })
    if deployment_id is not None:
        fields: dict[str, Any] = {"client_id": client_id, "last_notice_at": notice_time}
        if notice_type == HELLO_WORLD:
            fields.update(hello_world_at=notice_time, hello_world_notice_id=notice_id)
        change("lti_deployments", {"deployment_id": deployment_id}, fields)

    if notice_type == CONTEXT_COPY:
        if context_id is None:
            raise NormalizationError("LtiContextCopyNotice without context.id")
        origins = claims.get(CLAIM + "origin_contexts")
        origin = _text(origins[0]) if isinstance(origins, list) and origins else None
        change("context_copies", {"context_id": context_id, "origin_context_id": origin or ""}, {
            "context_title": _text(context.get("title")),
            "context_label": _text(context.get("label")),
            "deployment_id": deployment_id,
            "notice_id": notice_id,
            "notice_timestamp": notice_time,
        })
    elif notice_type == AP_SUBMISSION:
        submission_id = _text(_obj(claims, "submission").get("id"))
        activity_id = _text(_obj(claims, "activity").get("id"))
        if submission_id is None or activity_id is None:
            raise NormalizationError("LtiAssetProcessorSubmissionNotice without submission.id or activity.id")
        assets = _obj(claims, "assetservice").get("assets")
        change("asset_processor_submissions", {"submission_id": submission_id, "activity_id": activity_id}, {
            "for_user_id": _text(_obj(claims, "for_user").get("user_id")),
            "assets": assets if isinstance(assets, list) else [],
            "report_url": _text(_obj(claims, "assetreport").get("report_url")),
            "deployment_id": deployment_id,
            "context_id": context_id,
            "notice_id": notice_id,
            "notice_timestamp": notice_time,
        })
    elif notice_type not in KNOWN_TYPES:
        out.unknown_events.append(f"lti:{notice_type[:100]}")
    return out
