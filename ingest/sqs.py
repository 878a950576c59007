"""``canvas-stream sqs``: Canvas Live Events from Amazon SQS queues into the same Kafka topic.

Canvas Data Services' SQS delivery puts each event in a standard queue (name starting with
``canvas-live-events``). This role long-polls the queues of ``SQS_QUEUE_URLS`` through aiobotocore
(credentials, region and endpoint from the standard AWS configuration: environment including
``AWS_ENDPOINT_URL_SQS``, profile, instance or task role), turns each message into the record the
HTTPS ingress publishes (``ingest.sqs_messages``: pure), publishes it with the ingress's
``KafkaPublisher`` and deletes the message only once Kafka acknowledged it.

- Broker down: nothing is deleted; the messages' visibility lapses and SQS redelivers them; the
  poller backs off (up to ``SQS_MAX_BACKOFF_SECONDS``) and receives one message at a time until a
  publish succeeds again, so a long outage hardly raises the receive counts of the others.
- While a batch waits for Kafka, its visibility is extended (ChangeMessageVisibilityBatch), so no
  other poller receives it meanwhile.
- Not an event: published as a quarantine record (kept with the reason), then deleted.
- Another tenant's event: refused by the tenant binding, counted, deleted.
- At-least-once: a redelivered message is published again; the warehouse collapses it on the event
  id like an HTTPS retry. Several pollers (processes) may share the queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Sequence
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from canvas_stream.loop import install_fast_loop
from canvas_stream.settings import Settings
from canvas_stream.tenancy import DeliveryKind, TenantPolicy, parse_list
from ingest.binding import note_refusal
from ingest.publish import KafkaPublisher, PublishFailed, RecordRefused
from ingest.sqs_messages import Action, Plan, SqsMessage, plan_message

log = structlog.get_logger(__name__)

RECEIVED = Counter("canvas_stream_sqs_received_total", "SQS messages received (redeliveries included)", ["queue"])
PUBLISHED = Counter("canvas_stream_sqs_published_total", "SQS events acknowledged by Kafka", ["queue"])
QUARANTINED = Counter("canvas_stream_sqs_quarantined_total",
                      "SQS messages that are not events, published for the quarantine", ["queue"])
DELETED = Counter("canvas_stream_sqs_deleted_total", "SQS messages deleted from their queue", ["queue"])
PUBLISH_FAILED = Counter("canvas_stream_sqs_publish_failed_total",
                         "SQS messages left in the queue because Kafka did not acknowledge them", ["queue"])

MAX_MESSAGES = 10  # SQS's limit per ReceiveMessage / DeleteMessageBatch
SQS_ERRORS = (BotoCoreError, ClientError, OSError, asyncio.TimeoutError)


def queue_name(url: str) -> str:
    """The queue name (last path segment of its URL): metric label and log field."""
    return url.rstrip("/").rsplit("/", 1)[-1][:80]


def region_from_queue_url(url: str) -> str | None:
    """``https://sqs.eu-west-1.amazonaws.com/...`` -> ``eu-west-1`` (used when no region is configured)."""
    found = re.match(r"^https?://(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:queue\.)?amazonaws\.com", url)
    return found.group(1) if found else None


class QueuePoller:
    """One long-poll loop on one queue."""

    def __init__(self, queue_url: str, client: Any, publisher: KafkaPublisher, policy: TenantPolicy,
                 settings: Settings) -> None:
        self.queue_url = queue_url
        self.name = queue_name(queue_url)
        self.client = client
        self.publisher = publisher
        self.policy = policy
        self.visibility = settings.sqs_visibility_timeout_seconds
        self.wait_time = settings.sqs_wait_time_seconds
        self.max_backoff = settings.sqs_max_backoff_seconds
        self.max_body_bytes = settings.max_body_bytes
        self.sqs_ok: bool | None = None  # last ReceiveMessage succeeded
        self.broker_ok: bool | None = None  # last publish acknowledged
        self.last_receive_monotonic: float | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until ``stopping`` is set; a batch being handled is finished first."""
        backoff = 0.0
        while not stopping.is_set():
            if backoff:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=backoff)
                if stopping.is_set():
                    return
            try:
                messages = await self._receive(stopping, 1 if self.broker_ok is False else MAX_MESSAGES)
                if messages is None:
                    return
                if not messages:
                    backoff = 0.0
                    continue
                delivered = await self.handle_batch(messages)
            except SQS_ERRORS as exc:
                self.sqs_ok = False
                log.warning("sqs: request failed", queue=self.name, error=_describe(exc))
                delivered = False
            except Exception as exc:  # a bug must not kill the poller; the messages come back
                log.error("sqs: batch failed", queue=self.name, error=_describe(exc))
                delivered = False
            backoff = 0.0 if delivered else min(max(0.5, backoff * 2), self.max_backoff)

    async def _receive(self, stopping: asyncio.Event, limit: int) -> list[SqsMessage] | None:
        """One long poll; None when asked to stop meanwhile (a cancelled receive's messages simply reappear)."""
        receive = asyncio.ensure_future(self.client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=limit, WaitTimeSeconds=self.wait_time,
            VisibilityTimeout=self.visibility, MessageSystemAttributeNames=["SentTimestamp"],
        ))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            receive.cancel()
            raise
        finally:
            stop.cancel()
        if not receive.done():
            receive.cancel()
            with contextlib.suppress(asyncio.CancelledError, *SQS_ERRORS):
                await receive
            return None
        response = receive.result()
        self.sqs_ok = True
        self.last_receive_monotonic = time.monotonic()
        messages = [SqsMessage.from_api(self.queue_url, m) for m in response.get("Messages") or []]
        if messages:
            RECEIVED.labels(self.name).inc(len(messages))
        return messages

    async def handle_batch(self, messages: Sequence[SqsMessage]) -> bool:
        """Publish what is to be kept, delete what is done; True when nothing was left for lack of an ack."""
        plans = [plan_message(m, self.policy, max_body_bytes=self.max_body_bytes) for m in messages]
        for plan in plans:
            if plan.action is Action.REFUSE:
                assert plan.refusal is not None
                note_refusal(DeliveryKind.SQS, plan.refusal, plan.payload, queue=self.name,
                             message_id=plan.message.message_id[:100])
            elif plan.action is Action.QUARANTINE:
                log.warning("sqs: message is not an event; quarantining", queue=self.name,
                            message_id=plan.message.message_id[:100], reason=plan.reason)
        to_publish = [p for p in plans if p.action is not Action.REFUSE]
        done = [p for p in plans if p.action is Action.REFUSE]
        failed = 0
        if to_publish:
            keeper = asyncio.create_task(self._keep_invisible([p.message for p in to_publish]))
            try:
                results = await asyncio.gather(*(self.publisher.publish(p.key, p.value) for p in to_publish),
                                               return_exceptions=True)
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            for plan, result in zip(to_publish, results, strict=True):
                if result is None:
                    done.append(plan)
                    (PUBLISHED if plan.action is Action.PUBLISH else QUARANTINED).labels(self.name).inc()
                    continue
                if isinstance(result, RecordRefused):
                    # The broker answered (no backoff), but no retry gets this one in: it stays in the queue
                    # until the queue's redrive policy moves it to its dead-letter queue.
                    log.error("sqs: the broker refuses this message for its size; left in the queue for its "
                              "redrive policy", queue=self.name, message_id=plan.message.message_id[:100],
                              error=str(result))
                    continue
                failed += 1
                if not isinstance(result, PublishFailed):
                    log.error("sqs: publish crashed", queue=self.name, error=_describe(result))
            if failed:
                PUBLISH_FAILED.labels(self.name).inc(failed)
                log.warning("sqs: broker did not acknowledge; leaving messages in the queue", queue=self.name,
                            messages=failed)
            self.broker_ok = failed < len(to_publish)  # any answer: the broker is there
        await self._delete(done)
        return failed == 0

    async def _keep_invisible(self, messages: Sequence[SqsMessage]) -> None:
        """While a batch waits for Kafka, push its visibility timeout forward (no other poller gets it)."""
        interval = max(0.5, self.visibility / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                response = await self.client.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": self.visibility}
                             for i, m in enumerate(messages)],
                )
                if response.get("Failed"):
                    log.info("sqs: visibility not extended for some messages", queue=self.name,
                             failed=len(response["Failed"]))
            except SQS_ERRORS as exc:
                log.warning("sqs: could not extend visibility", queue=self.name, error=_describe(exc))

    async def _delete(self, plans: Sequence[Plan]) -> None:
        """Delete handled messages; a failed delete only means a redelivery (a harmless duplicate)."""
        if not plans:
            return
        response = await self.client.delete_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": p.message.receipt_handle} for i, p in enumerate(plans)],
        )
        deleted = len(response.get("Successful") or [])
        if deleted:
            DELETED.labels(self.name).inc(deleted)
        if response.get("Failed"):
            log.warning("sqs: some deletes failed; they will be redelivered", queue=self.name,
                        failed=len(response["Failed"]),
                        codes=sorted({str(f.get("Code"))[:60] for f in response["Failed"]}))


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {str(exc)[:300]}"


# -- the role ----------------------------------------------------------------------------------------


def status_app(pollers: Sequence[QueuePoller], publisher: KafkaPublisher,
               tasks: list[asyncio.Task[None]]) -> web.Application:
    """``/healthz`` (the poll loops run), ``/readyz`` (every queue answers, the broker acknowledges), ``/metrics``."""

    async def healthz(request: web.Request) -> web.Response:
        alive = all(not t.done() for t in tasks)
        return web.json_response({"status": "ok" if alive else "poller stopped"}, status=200 if alive else 500)

    async def readyz(request: web.Request) -> web.Response:
        queues: dict[str, dict[str, Any]] = {}
        ready = True
        for poller in pollers:
            broker = poller.broker_ok if poller.broker_ok is not None else await publisher.ready()
            sqs = bool(poller.sqs_ok)
            ready = ready and broker and sqs
            last = poller.last_receive_monotonic
            queues[poller.name] = {"sqs": "ok" if sqs else "unavailable", "broker": "ok" if broker else "unavailable",
                                   "seconds_since_last_receive": None if last is None
                                   else round(time.monotonic() - last, 1)}
        return web.json_response({"queues": queues}, status=200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_sqs(settings: Settings, stopping: asyncio.Event | None = None) -> int:
    """Poll every queue until ``stopping`` is set (SIGINT/SIGTERM set it); returns the exit status."""
    queue_urls = sorted(parse_list(settings.sqs_queue_urls))
    if not queue_urls:
        print("canvas-stream sqs: SQS_QUEUE_URLS is not set (comma list of queue URLs)", flush=True)
        return 2
    stopping = stopping or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    session = get_session()
    # botocore reads AWS_DEFAULT_REGION and profiles; AWS_REGION is what ECS/Lambda and other SDKs set.
    configured_region = session.get_config_variable("region") or os.environ.get("AWS_REGION") or None
    config = AioConfig(connect_timeout=10, read_timeout=settings.sqs_wait_time_seconds + 20,
                       retries={"max_attempts": 3, "mode": "standard"})
    publisher = KafkaPublisher(settings.require_kafka(), settings.kafka_topic,  # no spool: the queue is the buffer
                               ack_timeout=settings.kafka_ack_timeout_seconds,
                               max_record_bytes=settings.kafka_max_record_bytes)
    policy = TenantPolicy.from_settings(settings)
    async with contextlib.AsyncExitStack() as stack:
        pollers: list[QueuePoller] = []
        for url in queue_urls:
            region = configured_region or region_from_queue_url(url)
            if region is None:
                print(f"canvas-stream sqs: no AWS region for {queue_name(url)}: set AWS_DEFAULT_REGION", flush=True)
                return 2
            client = await stack.enter_async_context(session.create_client("sqs", region_name=region, config=config))
            pollers.append(QueuePoller(url, client, publisher, policy, settings))
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        tasks: list[asyncio.Task[None]] = []
        runner = web.AppRunner(status_app(pollers, publisher, tasks), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.host, settings.sqs_status_port).start()
        tasks.extend(asyncio.create_task(p.run(stopping), name=f"sqs-{p.name}") for p in pollers)
        print(f"canvas-stream sqs polling {', '.join(p.name for p in pollers)}; status on "
              f"http://{settings.host}:{settings.sqs_status_port} (/healthz, /readyz, /metrics)", flush=True)
        await stopping.wait()
        log.info("sqs: stopping; finishing the batches in hand")
        await asyncio.wait(tasks, timeout=settings.kafka_ack_timeout_seconds * 2 + 30)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def run_sqs(settings: Settings) -> int:
    """Run the SQS role until SIGINT/SIGTERM; returns the exit status."""
    install_fast_loop()
    return asyncio.run(serve_sqs(settings))
