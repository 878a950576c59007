"""``canvas-stream send``: sign events with the local test key and POST them to an ingress.

The events are the project's own examples (``canvas_stream/examples/<format>/<type>.json``, written
for this project; the Canvas documentation corpus under ``tests/data`` is test data and is not
shipped) or a JSON file holding one event or a list, in either format. Every copy gets fresh ids
(entity ids, event ids, request ids) and the current time, so ``--count`` makes new rows rather than
duplicates of one; account ids are kept, so copies stay in one tenant. ``--rate`` paces a load test.

Pure helpers (loading, fresh copies, claims) are separate from the sending loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from canvas_stream.errors import CanvasStreamError
from canvas_stream.records import FORMAT_CALIPER, FORMAT_CANVAS, detect_format

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
FORMATS = (FORMAT_CANVAS, FORMAT_CALIPER)
TOKEN_LIFETIME_SECONDS = 300
SHARD_FACTOR = 10**13  # a Canvas global id is shard * 10**13 + local id
CANVAS_URN = "urn:instructure:canvas:"
# Ids that place an event in its tenant: kept, so every copy belongs to the same institution.
KEPT_ID_KEYS = frozenset({"root_account_id", "user_account_id", "context_account_id", "account_id",
                          "developer_key_id"})
KEPT_URN_KINDS = frozenset({"account", "session"})
_DIGITS = re.compile(r"\d{1,19}")


class SendError(CanvasStreamError):
    """A bad event type, file or key; the message says which."""


# ---- events (pure) ---------------------------------------------------------------------------------


def example_types() -> list[str]:
    """Event types with an example in both formats."""
    names = [{p.stem for p in (EXAMPLES_DIR / fmt).glob("*.json")} for fmt in FORMATS]
    return sorted(set.intersection(*names))


def load_example(name: str, fmt: str = FORMAT_CANVAS) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise SendError(f"unknown format {fmt!r}: use canvas or caliper")
    if name not in example_types():
        raise SendError(f"no example event {name!r}; choose from: {', '.join(example_types())}")
    return json.loads((EXAMPLES_DIR / fmt / f"{name}.json").read_text())


def load_events_file(path: Path) -> list[dict[str, Any]]:
    """One event (a JSON object) or a list of them, each in the Canvas or the Caliper format."""
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise SendError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except ValueError as exc:
        raise SendError(f"{path} is not JSON: {exc}") from None
    events = document if isinstance(document, list) else [document]
    if not events:
        raise SendError(f"{path} holds no event")
    for index, event in enumerate(events):
        if detect_format(event) not in FORMATS:
            where = f"{path}" if len(events) == 1 else f"{path} item {index}"
            raise SendError(f"{where} is neither a Canvas ({{metadata, body}}) nor a Caliper ({{sensor, data}}) event")
    return events


def _fresh_global_id(old: str, ids: dict[str, str], rng: random.Random) -> str:
    """The same fresh id for every occurrence of ``old`` in one copy; the shard is kept."""
    if old not in ids:
        shard = int(old) // SHARD_FACTOR
        ids[old] = str(shard * SHARD_FACTOR + rng.randrange(10**6, 10**12))
    return ids[old]


def _fresh_urn(value: str, ids: dict[str, str], rng: random.Random) -> str:
    parts = value[len(CANVAS_URN):].split(":")
    out = []
    for index, part in enumerate(parts):
        kind = parts[index - 1] if index else ""
        if index and _DIGITS.fullmatch(part) and kind not in KEPT_URN_KINDS:
            part = _fresh_global_id(part, ids, rng)
        out.append(part)
    return CANVAS_URN + ":".join(out)


def _rewrite(value: Any, key: str, ids: dict[str, str], times: dict[str, str], rng: random.Random) -> Any:
    if isinstance(value, dict):
        return {k: _rewrite(v, k, ids, times, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, key, ids, times, rng) for v in value]
    if isinstance(value, str):
        if value in times:
            return times[value]
        if value.startswith(CANVAS_URN):
            return _fresh_urn(value, ids, rng)
        if value.startswith("urn:uuid:"):
            return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        if key == "request_id":
            if f"request:{value}" not in ids:
                ids[f"request:{value}"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            return ids[f"request:{value}"]
        is_id = key == "id" or key.endswith("_id")
        if is_id and key not in KEPT_ID_KEYS and _DIGITS.fullmatch(value):
            return _fresh_global_id(value, ids, rng)
    return value


def _iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_time(event: dict[str, Any]) -> str | None:
    """The example's event time (Canvas ``metadata.event_time``, Caliper ``eventTime``)."""
    if detect_format(event) == FORMAT_CANVAS:
        return event["metadata"].get("event_time")
    data = event.get("data") or [{}]
    return data[0].get("eventTime") if isinstance(data[0], dict) else None


def fresh_copy(event: dict[str, Any], *, rng: random.Random, now: datetime,
               ids: dict[str, str] | None = None) -> dict[str, Any]:
    """A copy with fresh entity ids, event ids and request ids, and ``now`` for every timestamp
    equal to the event's time (event time, send time, created/updated/submitted times).

    ``ids`` (old id or request id -> new) is shared by copies that must name the same objects and
    request; by default each copy gets its own."""
    now_text = _iso_ms(now)
    times = {t: now_text for t in (event_time(event), event.get("sendTime")) if isinstance(t, str)}
    return _rewrite(copy.deepcopy(event), "", {} if ids is None else ids, times, rng)


def fresh_happening(deliveries: Sequence[dict[str, Any]], *, rng: random.Random, now: datetime
                    ) -> list[dict[str, Any]]:
    """Fresh copies of one happening's deliveries (e.g. the Canvas and the Caliper example of a type):
    new objects, request and time shared by all of them, as Canvas sends one happening to a
    subscription of each format; each Caliper copy still gets its own event id."""
    shared: dict[str, str] = {}
    return [fresh_copy(event, rng=rng, now=now, ids=shared) for event in deliveries]


def event_ids(event: dict[str, Any]) -> list[str]:
    """The ids the warehouse gives this event in ``canvas_stream.events.event_id``."""
    if detect_format(event) == FORMAT_CANVAS:
        from processors.normalize.canvas import canvas_event_id

        return [canvas_event_id(event)]
    return [str(item.get("id")) for item in event.get("data") or [] if isinstance(item, dict)]


def event_label(event: dict[str, Any]) -> str:
    """``canvas course_created`` or ``caliper logged_in`` (Caliper names are ``Type/Action``)."""
    fmt = detect_format(event)
    if fmt == FORMAT_CANVAS:
        return f"canvas {event['metadata'].get('event_name')}"
    items = [i for i in event.get("data") or [] if isinstance(i, dict)]
    return "caliper " + ",".join(f"{i.get('type')}/{i.get('action')}" for i in items)


def sign_event(event: dict[str, Any], key: rsa.RSAPrivateKey, kid: str, *, issuer: str, now: float) -> str:
    """A compact RS256 JWS whose claims are the event plus ``iss``, ``iat`` and ``exp``, as Canvas signs."""
    import jwt

    claims = {**event, "iss": issuer, "iat": int(now), "exp": int(now) + TOKEN_LIFETIME_SECONDS}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def copies(events: Sequence[dict[str, Any]], count: int, *, fresh: bool, seed: int | None = None
           ) -> Iterator[dict[str, Any]]:
    """``count`` events, cycling through ``events``, each a fresh copy unless ``fresh`` is false."""
    rng = random.Random(seed)
    for index in range(count):
        event = events[index % len(events)]
        yield fresh_copy(event, rng=rng, now=datetime.now(UTC)) if fresh else copy.deepcopy(event)


# ---- sending (I/O) ----------------------------------------------------------------------------------


@dataclass
class SendReport:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.sent > 0 and all(s.startswith("2") for s in self.statuses)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    def summary(self) -> str:
        rate = self.sent / self.elapsed if self.elapsed > 0 else 0.0
        answers = ", ".join(f"{status} x{n}" for status, n in sorted(self.statuses.items()))
        return (f"sent {self.sent} event(s) in {self.elapsed:.2f} s ({rate:.1f}/s): {answers}; latency "
                f"p50 {self.percentile(0.5) * 1000:.0f} ms, p95 {self.percentile(0.95) * 1000:.0f} ms, "
                f"max {max(self.latencies, default=0) * 1000:.0f} ms")


async def send_events(url: str, events: Iterator[dict[str, Any]], key: rsa.RSAPrivateKey, kid: str, *,
                      issuer: str, rate: float = 0.0, concurrency: int = 8, timeout: float = 15.0,
                      on_answer: Any = None) -> SendReport:
    """POST each event (signed) to ``url``; at most ``rate`` per second (0: as fast as answered)."""
    import aiohttp

    report = SendReport()
    gate = asyncio.Semaphore(max(1, concurrency))
    started = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    async def post(session: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        try:
            body = sign_event(event, key, kid, issuer=issuer, now=time.time())
            sent_at = time.monotonic()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "text/plain"}) as response:
                    answer = await response.text()
                    status = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, answer = "error", f"{type(exc).__name__}: {exc}"[:200]
            report.latencies.append(time.monotonic() - sent_at)
            report.sent += 1
            report.statuses[status] += 1
            if not status.startswith("2") and len(report.failures) < 5:
                report.failures.append(f"{status} {event_label(event)}: {answer[:200]}")
            if on_answer is not None:
                on_answer(event, status, answer)
        finally:
            gate.release()

    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        for index, event in enumerate(events):
            if rate > 0:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await gate.acquire()
            task = asyncio.create_task(post(session, event))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    report.elapsed = time.monotonic() - started
    return report
