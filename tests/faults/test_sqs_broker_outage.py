"""The broker stops answering while messages wait in an SQS queue: nothing is deleted while it is
down (for longer than the visibility timeout, so SQS redelivers), and once it is back the warehouse
holds exactly the events sent.

The broker is paused (SIGSTOP) rather than stopped: the test broker (tansu, memory storage) comes
back from a restart as an empty cluster, losing what it had acknowledged (see test_broker_outage.py),
which is not the failure under test here. A paused broker is a broker that does not answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid

from processors.normalize.canvas import canvas_event_id
from tests.faults.harness import deliveries, event_ids, http_status, logs, paused, wait_for_events, worker_role
from tests.support.procs import wait_until
from tests.support.sqs import (
    canvas_course_event,
    counters,
    create_queue,
    messages_in_queue,
    queue_empty,
    send_bodies,
    sqs_client,
    sqs_role,
    total,
)

VISIBILITY = 4  # seconds; the outage lasts several times this


async def test_sqs_messages_wait_in_the_queue_while_the_broker_is_down(
        warehouse, own_broker, sqs_endpoint, processes):
    bootstrap, topic = await deliveries(own_broker)
    tag = f"sqs-outage-{uuid.uuid4().hex[:6]}"
    events = [canvas_course_event(i, tag) for i in range(80)]
    rng = random.Random(3)
    async with sqs_client(sqs_endpoint) as client:
        queue = await create_queue(client, f"canvas-live-events-{tag}", visibility_timeout=VISIBILITY)
        poller = sqs_role(sqs_endpoint, [queue], bootstrap=bootstrap, topic=topic,
                          SQS_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY), SQS_MAX_BACKOFF_SECONDS="2")
        worker = worker_role(database_url=warehouse, bootstrap=bootstrap, topic=topic, group=f"{tag}-workers")
        await processes.launch(poller, worker, healthy=False)

        before = events[:20]
        await send_bodies(client, queue, [json.dumps(e) for e in before])
        await wait_for_events(warehouse, {canvas_event_id(e) for e in before}, timeout=120,
                              logs=lambda: logs(poller, worker))
        await wait_until(lambda: queue_empty(client, queue), timeout=30, message="queue emptied before the outage")
        deleted_before = total(await counters(poller), "canvas_stream_sqs_deleted_total")
        assert deleted_before == 20

        with paused(own_broker):
            during = events[20:]
            bodies = [json.dumps(e) for e in during + rng.sample(during, 20)]
            await send_bodies(client, queue, bodies)
            await asyncio.sleep(VISIBILITY * 4)  # received, not acknowledged, visible again, received again ...

            samples = await counters(poller)
            assert total(samples, "canvas_stream_sqs_deleted_total") == deleted_before, logs(poller)  # not one delete
            assert total(samples, "canvas_stream_sqs_publish_failed_total") > 0, logs(poller)  # it did try
            assert await messages_in_queue(client, queue) == len(bodies)  # all still there
            status, body = await http_status(f"{poller.status_url}/readyz")
            assert status == 503 and body is not None and "unavailable" in json.dumps(body), body
            assert await event_ids(warehouse) == {canvas_event_id(e) for e in before}

        await wait_for_events(warehouse, {canvas_event_id(e) for e in events}, timeout=180,
                              logs=lambda: logs(poller, worker))
        await wait_until(lambda: queue_empty(client, queue), timeout=60, message=f"queue emptied\n{logs(poller)}")
        samples = await counters(poller)
        assert total(samples, "canvas_stream_sqs_deleted_total") >= deleted_before + len(bodies)
        status, _ = await http_status(f"{poller.status_url}/readyz")
        assert status == 200
