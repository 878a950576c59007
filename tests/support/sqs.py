"""A real SQS-protocol server for the tests (moto in server mode on loopback), and helpers to run
``canvas-stream sqs`` against it: its environment, queues, and its counters."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from prometheus_client.parser import text_string_to_metric_families

from canvas_stream.embedded.process import free_port
from tests.support.corpus import CORPUS
from tests.support.procs import Role, role_env

REGION = "us-east-1"
OUR_ACCOUNT = "OurRootAccountUuidForTheSqsTests00000001"
OTHER_ACCOUNT = "AnotherSchoolsRootAccountUuid00000000002"


@contextmanager
def moto_sqs_server() -> Iterator[str]:
    """Start moto's SQS-speaking server on 127.0.0.1 and a free port; yield its endpoint URL; stop it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def aws_env(endpoint: str) -> dict[str, str]:
    """The standard AWS configuration pointing at the test server (and at nothing of this machine)."""
    return {
        "AWS_ENDPOINT_URL_SQS": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@asynccontextmanager
async def sqs_client(endpoint: str):
    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


async def create_queue(client: Any, name: str, visibility_timeout: int = 30) -> str:
    response = await client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)})
    return response["QueueUrl"]


async def send_bodies(client: Any, queue_url: str, bodies: list[str]) -> list[str]:
    """Send in batches of 10 (like Canvas, one event per message); returns the message ids in order."""
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        response = await client.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)])
        assert not response.get("Failed"), response.get("Failed")
        by_entry = {int(r["Id"]): r["MessageId"] for r in response["Successful"]}
        ids.extend(by_entry[i] for i in range(len(chunk)))
    return ids


async def messages_in_queue(client: Any, queue_url: str) -> int:
    """Visible + in flight + delayed: everything not yet deleted."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attributes = (await client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names))["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


async def queue_empty(client: Any, queue_url: str) -> bool:
    """Nothing left in the queue (visible, in flight or delayed)."""
    return await messages_in_queue(client, queue_url) == 0


def sqs_role(endpoint: str, queue_urls: list[str], *, bootstrap: str, topic: str, **extra: str) -> Role:
    """``canvas-stream sqs`` on the test server; ``role.status_url`` serves /healthz, /readyz, /metrics."""
    env = role_env(
        SQS_QUEUE_URLS=",".join(queue_urls), SQS_STATUS_PORT=str(free_port()), SQS_WAIT_TIME_SECONDS="1",
        HOST="127.0.0.1", KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic, KAFKA_ACK_TIMEOUT_SECONDS="2",
        LIVE_EVENTS_ROOT_ACCOUNT_UUIDS=OUR_ACCOUNT, **aws_env(endpoint),
    )
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    env.update(extra)
    role = Role("sqs", env)
    role.status_url = f"http://127.0.0.1:{env['SQS_STATUS_PORT']}"  # type: ignore[attr-defined]
    return role


async def counters(role: Role) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every ``*_total`` sample the role exports: {(name, sorted labels): value}; {} if unreachable."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"{role.status_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as response:  # type: ignore[attr-defined]
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of a counter's samples whose labels include ``labels``."""
    return sum(value for (n, got), value in samples.items()
               if n == name and all((k, v) in got for k, v in labels.items()))


def canvas_course_event(i: int, tag: str, account: str = OUR_ACCOUNT) -> dict:
    """A distinct Canvas-format course_created event naming ``account``."""
    doc = json.loads((CORPUS / "canvas" / "course_created.json").read_text())
    payload = copy.deepcopy(doc["examples"][0]["payload"])
    course = str(31070000000000000 + i)
    payload["metadata"].update(root_account_uuid=account, context_id=course, context_type="Course",
                               request_id=f"{tag}-{i}", event_time=f"2024-02-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z")
    payload["body"].update(course_id=course, name=f"{tag} course {i}")
    return payload


def caliper_event(name: str, account: str | None) -> dict:
    """The corpus's first Caliper example of ``name``, its actor naming ``account`` (None: no extension)."""
    doc = json.loads((CORPUS / "caliper" / f"{name}.json").read_text())
    payload = copy.deepcopy(doc["examples"][0]["payload"])
    for item in payload["data"]:
        actor = item.setdefault("actor", {"id": "urn:instructure:canvas:user:21070000000000001", "type": "Person"})
        if account is None:
            actor.pop("extensions", None)
        else:
            actor.setdefault("extensions", {}).setdefault("com.instructure.canvas", {})["root_account_uuid"] = account
    return payload
