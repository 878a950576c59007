"""Operational tables: what the system itself needs to watch, next to the warehouse it feeds.

``ingress_answers`` holds the answers every ingress replica gave Canvas, per minute, route, replica
and status code (absolute counts per replica, upserted every few seconds), so the 24-hour
deactivation budget is right with several replicas and across restarts. The index on
``events.received_at`` serves the status page's "events per minute over the last hour".
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, SmallInteger, Table, Text

from processors.warehouse.tables import TZ, events, metadata

ingress_answers = Table(
    "ingress_answers",
    metadata,
    Column("minute", TZ, primary_key=True, comment="Start of the minute the answers were given in."),
    Column("route", Text, primary_key=True, comment="Route template, e.g. /live-events."),
    Column("replica", Text, primary_key=True, comment="Ingress process that answered: host:pid:start time."),
    Column("code", SmallInteger, primary_key=True, autoincrement=False, comment="HTTP status code of the answers."),
    Column("answers", BigInteger, nullable=False, comment="Answers with this code in this minute."),
    Column("slow", BigInteger, nullable=False, comment="How many of them took 15 s or more (Canvas: a timeout)."),
    Index("ingress_answers_minute_idx", "minute"),
    comment="Ingress answers to Canvas per minute, route, replica and status: the source of the 24-hour "
            "deactivation budget (operational; not event data).",
    info={"fed_by": ["every ingress answer on a Canvas route"]},
)

events_received_at_idx = Index("events_received_at_idx", events.c.received_at)
