"""Names on the wire, defined once: record sources and formats, and the LTI claims we read.

The ingress writes them and the workers read them, so both import them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

#: The key of Canvas's own fields in a Caliper entity's ``extensions``.
CANVAS_EXTENSION = "com.instructure.canvas"
_NO_EXTENSION: Mapping[str, Any] = {}


def canvas_extension(entity: Any) -> Mapping[str, Any]:
    """The Canvas extension of a Caliper entity (empty when it has none). Read only: it is the
    entity's own dict. Decoded JSON is made of dicts, so dicts are what it looks for (faster than
    asking for any Mapping, and it is asked several times per event)."""
    if isinstance(entity, dict):
        extensions = entity.get("extensions")
        if isinstance(extensions, dict):
            canvas = extensions.get(CANVAS_EXTENSION)
            if isinstance(canvas, dict):
                return canvas
    return _NO_EXTENSION
