"""Pure normalizers: a verified record in, row changes out (see ``model``)."""

from __future__ import annotations

from canvas_stream.records import (
    EXTRA_NOT_AN_EVENT,
    FORMAT_CALIPER,
    FORMAT_CANVAS,
    SOURCE_LIVE_EVENT,
    SOURCE_LTI_NOTICE,
    Record,
)

from .ids import IdPolicy
from .model import NormalizationError, Normalized

__all__ = ["IdPolicy", "NormalizationError", "Normalized", "normalize"]


def normalize(record: Record, ids: IdPolicy) -> Normalized:
    """Dispatch on source and format; raises NormalizationError for the quarantine.

    ``ids`` (from the settings: the home shard) decides the stored form of every Canvas id.
    """
    not_an_event = record.extra.get(EXTRA_NOT_AN_EVENT) if isinstance(record.extra, dict) else None
    if not_an_event:  # the receiving side already knows why (e.g. an SQS body that is not JSON)
        raise NormalizationError(str(not_an_event)[:500])
    if record.source == SOURCE_LIVE_EVENT:
        if record.format == FORMAT_CANVAS:
            from .canvas import normalize_canvas

            return normalize_canvas(record, ids)
        if record.format == FORMAT_CALIPER:
            from .caliper import normalize_caliper

            return normalize_caliper(record, ids)
        raise NormalizationError(f"unrecognised live event format {record.format[:40]!r}")
    if record.source == SOURCE_LTI_NOTICE:
        from .notices import normalize_notice

        return normalize_notice(record)
    raise NormalizationError(f"unknown record source {record.source[:40]!r}")
