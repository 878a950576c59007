"""A batch the warehouse refuses in a way the worker cannot settle itself: it must not commit past it.

Here a trigger refuses one event and every quarantine row (as a quarantine row PostgreSQL cannot
store would): the batch fails after the poison search. faust would restart the agent and its next
batches' acks would let faust commit past the failed one (its commit does not look for a hole when
a partition has no committed offset yet, nor for a hole of one message). So the worker exits (its
container restarts it); the restarted worker writes the event once the database takes it.
"""

from __future__ import annotations

import asyncpg

from canvas_stream.settings import plain_database_url
from processors.warehouse.schema import SCHEMA
from tests.faults.harness import (
    Sender,
    ingress_role,
    logs,
    make_events,
    restarted,
    wait_for_events,
    worker_role,
)
from tests.support.procs import wait_until

REFUSE = f"""
create or replace function {SCHEMA}.test_refuse_event() returns trigger language plpgsql as $$
begin
  if new.event_id = tg_argv[0] then
    raise exception 'refused by the test' using errcode = '23514';
  end if;
  return new;
end $$;
create or replace function {SCHEMA}.test_refuse_quarantine() returns trigger language plpgsql as $$
begin
  raise exception 'refused by the test' using errcode = '23514';
end $$;
create trigger test_refuse_event before insert on {SCHEMA}.events
  for each row execute function {SCHEMA}.test_refuse_event('%s');
create trigger test_refuse_quarantine before insert on {SCHEMA}.quarantine
  for each row execute function {SCHEMA}.test_refuse_quarantine();
"""
ALLOW = f"""
drop trigger if exists test_refuse_event on {SCHEMA}.events;
drop trigger if exists test_refuse_quarantine on {SCHEMA}.quarantine;
drop function if exists {SCHEMA}.test_refuse_event();
drop function if exists {SCHEMA}.test_refuse_quarantine();
"""


async def _sql(database_url: str, statements: str) -> None:
    conn = await asyncpg.connect(plain_database_url(database_url))
    try:
        await conn.execute(statements)
    finally:
        await conn.close()


async def test_a_refused_batch_stops_the_worker_uncommitted(jwks, warehouse, kafka_bootstrap, topic, processes):
    ingress = ingress_role(jwks_url=jwks.url, bootstrap=kafka_bootstrap, topic=topic)
    worker = worker_role(database_url=warehouse, bootstrap=kafka_bootstrap, topic=topic, group=f"{topic}-g")
    await processes.launch(ingress, worker)
    sender = Sender(ingress.url)
    events = make_events("refused-write", 80)
    refused = events[20]
    try:
        await _sql(warehouse, REFUSE % refused.event_id)
        await sender.send(events[:20])
        await wait_for_events(warehouse, sender.accepted, timeout=120, logs=lambda: logs(worker))
        await sender.send([refused])
        await wait_until(lambda: _exited(worker), timeout=60, message=f"the worker stopped\n{logs(worker)}")
        assert worker.proc.returncode != 0, logs(worker)
        assert "batch write failed; stopping the worker" in worker.log.read_text(), logs(worker)  # all of it
        # What comes next waits in Kafka, and is written with the refused event once it is accepted.
        await sender.send(events[21:])
        assert sender.accepted == {e.event_id for e in events}, sender.refused[:5]
    finally:
        await _sql(warehouse, ALLOW)
    again = restarted(worker)
    await processes.launch(again)
    await wait_for_events(warehouse, sender.accepted, timeout=120, logs=lambda: logs(again))


async def _exited(role) -> bool:
    return role.proc.poll() is not None
