"""Warehouse tables fed by LTI Platform Notification Service notices.

Built with :func:`~processors.warehouse.tables.entity_table` on the shared metadata, so the writer
upserts them with the same per-column, order-safe rule as every other table. Imported by
``processors.warehouse`` so that any code collecting tables sees them.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Text
from sqlalchemy.dialects.postgresql import JSONB

from processors.warehouse.tables import TZ, entity_table

NOTICE_TYPES_FED = ["LtiHelloWorldNotice", "LtiContextCopyNotice", "LtiAssetProcessorSubmissionNotice"]

lti_notices = entity_table(
    "lti_notices",
    [Column("notice_id", Text, primary_key=True,
            comment="notice.id (a UUID per notice); the key that makes a repeated delivery a no-op.")],
    Column("notice_type", Text, comment="notice.type, e.g. LtiContextCopyNotice (any type, known or not)."),
    Column("issuer", Text, comment="iss of the notice JWT (the platform)."),
    Column("client_id", Text, comment="The tool's client id the notice was addressed to (aud/azp)."),
    Column("deployment_id", Text, comment="LTI deployment_id claim, '<tool id>:<context lti id>' on Canvas."),
    Column("context_id", Text, comment="LTI context id (context claim id; opaque, not a Canvas id)."),
    Column("context_type", Text, comment="Context kind: Course, Account or the raw LTI type."),
    Column("user_sub", Text, comment="sub claim (the user's LTI id) when the notice has one."),
    Column("notice_timestamp", TZ, comment="notice.timestamp: when the notified event happened."),
    Column("received_at", TZ, comment="When the ingress received and verified the notice."),
    Column("kid", Text, comment="Key id of the platform key that signed it."),
    Column("claims", JSONB(none_as_null=True), comment="All decoded JWT claims, as received."),
    Column("jwt", Text, comment="The compact JWS as received (re-verifiable while the platform key lives)."),
    Index("lti_notices_type_time_idx", "notice_type", "notice_timestamp"),
    comment="Every verified LTI PNS notice, once per notice id, whatever its type.",
    fed_by=["every LTI notice"],
)

context_copies = entity_table(
    "context_copies",
    [
        Column("context_id", Text, primary_key=True, comment="LTI context id of the destination course."),
        Column("origin_context_id", Text, primary_key=True,
               comment="LTI context id of the source course (origin_contexts[0]); '' when Canvas omits it."),
    ],
    Column("context_title", Text, comment="Title of the destination course."),
    Column("context_label", Text, comment="Label (course code) of the destination course."),
    Column("deployment_id", Text, comment="LTI deployment that received the notice."),
    Column("notice_id", Text, comment="The latest notice that reported this copy."),
    Column("notice_timestamp", TZ, comment="When the content was copied (notice.timestamp)."),
    comment="Course copies: which course's content was imported into which (LtiContextCopyNotice).",
    fed_by=["LtiContextCopyNotice"],
)

asset_processor_submissions = entity_table(
    "asset_processor_submissions",
    [
        Column("submission_id", Text, primary_key=True,
               comment="submission.id, '<submission lti id>:<attempt>'; a resubmission reuses it."),
        Column("activity_id", Text, primary_key=True,
               comment="activity.id: the asset processor attached to the assignment."),
    ],
    Column("for_user_id", Text, comment="for_user.user_id: the student who submitted (LTI id)."),
    Column("assets", JSONB(none_as_null=True),
           comment="assetservice.assets: asset_id, url, sha256_checksum (base64), size, ..."),
    Column("report_url", Text, comment="assetreport.report_url: where processing reports are POSTed."),
    Column("deployment_id", Text, comment="LTI deployment that received the notice."),
    Column("context_id", Text, comment="LTI context id of the course."),
    Column("notice_id", Text, comment="The latest notice for this submission (a Resubmit sends a new one)."),
    Column("notice_timestamp", TZ, comment="notice.timestamp of that notice."),
    comment="Submissions handed to an asset processor (LtiAssetProcessorSubmissionNotice), latest notice wins.",
    fed_by=["LtiAssetProcessorSubmissionNotice"],
)

lti_deployments = entity_table(
    "lti_deployments",
    [Column("deployment_id", Text, primary_key=True, comment="LTI deployment_id.")],
    Column("client_id", Text, comment="The tool's client id for this deployment."),
    Column("hello_world_at", TZ, comment="Handler verified at: time of the latest LtiHelloWorldNotice."),
    Column("hello_world_notice_id", Text, comment="Id of that LtiHelloWorldNotice."),
    Column("last_notice_at", TZ, comment="Time of the latest notice of any type for this deployment."),
    comment="LTI deployments seen in notices; hello_world_at shows the notice handler works.",
    fed_by=["every LTI notice"],
)
