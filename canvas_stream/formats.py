"""Names on the wire, defined once: record sources and formats, and the LTI claims we read.

The ingress writes them and the workers read them, so both import them from here.
"""

from __future__ import annotations

SOURCE_LIVE_EVENT = "live_event"
SOURCE_LTI_NOTICE = "lti_notice"

FORMAT_CANVAS = "canvas"
FORMAT_CALIPER = "caliper"
FORMAT_LTI_NOTICE = "lti_notice"
FORMAT_UNKNOWN = "unknown"

LTI_VERSION = "1.3.0"
#: Prefix of every LTI 1.3 claim name (IMS LTI Core 1.3, section 5).
LTI_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
CLAIM_VERSION = LTI_CLAIM + "version"
CLAIM_NOTICE = LTI_CLAIM + "notice"
CLAIM_DEPLOYMENT_ID = LTI_CLAIM + "deployment_id"
CLAIM_CONTEXT = LTI_CLAIM + "context"
