"""Every Prometheus metric of the ingress and the workers, declared once.

Names follow the Prometheus conventions: a ``canvas_stream_`` prefix, base units (seconds, bytes),
``_total`` for counters (added by prometheus_client), and a ``code`` label for HTTP status codes.
``deploy/prometheus/alerts.yml`` and ``deploy/grafana/canvas-stream.json`` use these names; a unit
test checks that every name they use is registered here (or by a module that registers its own).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets up to 30 s: Canvas gives up on an answer after 15 s (a "timeout" against the
# subscription), so the interesting range reaches well past it.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0)
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Event age spans seconds (live) to days (Canvas retries, a replayed backlog).
AGE_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 604800.0)

# -- ingress ----------------------------------------------------------------------------------------

INGRESS_REQUEST_DURATION = Histogram(
    "canvas_stream_ingress_request_duration_seconds",
    "Time from the start of a request's handler to its answer, by route template and HTTP status code",
    ["route", "code"],
    buckets=REQUEST_BUCKETS,
)
SPOOL_RECORDS = Gauge("canvas_stream_ingress_spool_records", "Records in this ingress's spool, not yet in Kafka")
SPOOL_BYTES = Gauge("canvas_stream_ingress_spool_bytes", "Bytes of this ingress's spool segments, not yet in Kafka")
JWKS_FETCH_FAILURES = Counter(
    "canvas_stream_jwks_fetch_failures", "JWKS fetches that failed (network, HTTP status, unusable key set)", ["url"]
)
CANVAS_ANSWERS_24H = Gauge(
    "canvas_stream_canvas_answers_24h",
    "Answers Canvas counts against a subscription over the last 24 h, all ingress replicas "
    "(from canvas_stream.ingress_answers): kind=timeout (slower than 15 s), error (other non-2xx), "
    "foreign_tenant (403 refusals: they count against the sender's subscription, not ours)",
    ["route", "kind"],
)
CANVAS_DEACTIVATION_THRESHOLD = Gauge(
    "canvas_stream_canvas_deactivation_threshold",
    "Answers in 24 h after which Canvas deactivates a Live Events subscription, by kind",
    ["kind"],
)
CANVAS_ANSWERS_UPDATED = Gauge(
    "canvas_stream_canvas_answers_updated_timestamp_seconds",
    "When canvas_stream_canvas_answers_24h was last read from PostgreSQL (unix time)",
)

RESPONSE_DEADLINE_EXCEEDED = Counter(
    "canvas_stream_ingress_deadline_exceeded",
    "Answers on Canvas's routes given as 503 because RESPONSE_DEADLINE_SECONDS passed (something hung), by route",
    ["route"],
)
LATE_ACKNOWLEDGEMENTS = Counter(
    "canvas_stream_ingress_late_acknowledgements",
    "Publishes acknowledged (or spooled) after their request was already answered 503 at the deadline: "
    "durable; the sender's retry is a duplicate the warehouse absorbs",
)
LTI_NONCE_REPLAYS = Counter(
    "canvas_stream_lti_nonce_replays", "LTI notices rejected because their nonce was seen under another notice id"
)
LTI_NONCE_STORE_UNAVAILABLE = Counter(
    "canvas_stream_lti_nonce_store_unavailable",
    "LTI notices whose nonce was checked against this replica's memory only (PostgreSQL unreachable)",
)
LTI_HELLO_WORLD_OVERDUE = Gauge(
    "canvas_stream_lti_hello_world_overdue_deployments",
    "LTI deployments whose LtiHelloWorldNotice handler was set more than LTI_HELLO_WORLD_WAIT_SECONDS ago "
    "without an LtiHelloWorldNotice stored since (from PostgreSQL)",
)

# -- worker ---------------------------------------------------------------------------------------

EVENTS_WRITTEN = Counter("canvas_stream_worker_events", "Events committed to canvas_stream.events")
QUARANTINED = Counter("canvas_stream_worker_quarantined", "Messages quarantined")
UNKNOWN_EVENTS = Counter("canvas_stream_unknown_events", "Events of names the mapping does not know", ["event_name"])
UNKNOWN_FIELDS = Counter("canvas_stream_unknown_fields", "Event fields the mapping does not know", ["field"])
ERASED_ON_ARRIVAL = Counter("canvas_stream_worker_erased_on_arrival",
                            "Events naming an erased person, dropped (about them) or redacted on arrival", ["action"])
EVENT_SHARDS = Counter("canvas_stream_event_shards",
                       "Events per Canvas shard of their root account (see CANVAS_HOME_SHARD)", ["shard"])
CONSUMER_LAG = Gauge(
    "canvas_stream_worker_consumer_lag",
    "Messages past the committed offset on each partition assigned to this worker (end offset - committed)",
    ["topic", "partition"],
)
BATCH_COMMIT_DURATION = Histogram(
    "canvas_stream_worker_batch_commit_duration_seconds",
    "Time to write one batch to PostgreSQL, from the first attempt to the commit (retries included)",
    buckets=COMMIT_BUCKETS,
)
LAST_COMMIT = Gauge(
    "canvas_stream_worker_last_commit_timestamp_seconds", "When this worker last committed a batch (unix time)"
)
EVENT_AGE = Histogram(
    "canvas_stream_worker_event_age_seconds",
    "Age of each committed event: commit time minus the event's own time",
    buckets=AGE_BUCKETS,
)
DATABASE_RETRIES = Counter(
    "canvas_stream_worker_database_retries", "Batch writes retried because the database was unavailable"
)


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe`` for each amount, counted per bucket first: one increment per bucket that
    changes and one of the sum, instead of a locked increment of both per amount (the worker observes
    every event's age). Falls back to ``observe`` if prometheus_client's internals ever change."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not amounts:
        return
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1  # the first bucket whose bound is >= amount, as observe()
    total.inc(sum(amounts))
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)
