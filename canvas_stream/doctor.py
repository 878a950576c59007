"""``canvas-stream doctor``: what a deployment needs, checked, one line each.

Each check is a small async function with a bounded timeout that returns :class:`Result` lines and
never raises: database reachable and migrated to head, broker reachable, the deliveries topic there
with the configured partitions, the JWKS reachable and parseable, the clock against the JWKS server's
``Date`` header, the tenant binding set, the spool writable, and which Canvas shard the latest events
name against ``CANVAS_HOME_SHARD``. Exit status for scripts: 0 all ok (warnings allowed), 1 a check
failed, 2 bad settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from canvas_stream.settings import Settings, mask_url, plain_database_url
from ingest.answers import BUDGET_SQL
from ingest.budget import ERROR_THRESHOLD, TIMEOUT_THRESHOLD, Budget, budget_from_rows

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
EXIT_OK, EXIT_FAILED, EXIT_BAD_SETTINGS = 0, 1, 2
DEFAULT_TIMEOUT = 5.0
# The tightest clock tolerance the ingress applies is the LTI leeway (60 s by default); warn well before.
CLOCK_WARN_SECONDS = 5.0
# Settings another part of the system adds: read with a default so doctor works before and after.
TENANT_SETTINGS = ("live_events_root_account_uuids", "live_events_subscription_ids")


@dataclass(frozen=True)
class Result:
    check: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.check:<9} {self.detail}"


def required_settings_missing(settings: Settings) -> list[str]:
    """Settings every deployment needs; their absence is a bad-settings exit (2), not a failed check."""
    missing = []
    if settings.database_url is None:
        missing.append("DATABASE_URL is not set")
    if not settings.kafka_bootstrap_servers:
        missing.append("KAFKA_BOOTSTRAP_SERVERS is not set")
    return missing


def _problem(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    from canvas_stream.migrate import connect_problem

    return connect_problem(exc, timeout)


# ---- database -----------------------------------------------------------------------------------


async def check_database(settings: Settings, timeout: float) -> list[Result]:
    """Reachable, and the warehouse's Alembic revision is the code's head."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from canvas_stream.migrate import VERSION_TABLE, head_revisions

    url = settings.require_database_url()
    where = mask_url(plain_database_url(url))
    engine = create_async_engine(url, connect_args={"timeout": timeout})
    try:
        async with asyncio.timeout(timeout + 1), engine.connect() as conn:
            await conn.execute(text("select 1"))
            exists = (await conn.execute(text("select to_regclass(:t)"), {"t": VERSION_TABLE})).scalar()
            current = set((await conn.execute(text(f"select version_num from {VERSION_TABLE}"))).scalars()) \
                if exists else set()
    except Exception as exc:
        return [Result("database", FAIL, f"cannot connect to {where}: {_problem(exc, timeout)}")]
    finally:
        await engine.dispose()
    heads = set(head_revisions())
    if not current:
        return [Result("database", FAIL, f"{where} reachable but not migrated: run `canvas-stream migrate`")]
    if current != heads:
        return [Result("database", FAIL, f"{where} at revision {', '.join(sorted(current))}, code expects "
                                         f"{', '.join(sorted(heads))}: run `canvas-stream migrate`")]
    return [Result("database", OK, f"{where} reachable, migrations at head ({', '.join(sorted(heads))})")]


# ---- broker and topic ----------------------------------------------------------------------------


async def check_broker(settings: Settings, timeout: float) -> list[Result]:
    """Broker answers; the deliveries topic exists with KAFKA_PARTITIONS partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    bootstrap = settings.require_kafka()
    topic = settings.kafka_topic
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            topics = await admin.describe_topics()  # every topic: naming ours could auto-create it
    except Exception as exc:
        problem = "no broker answered" if type(exc).__name__ == "KafkaConnectionError" else _problem(exc, timeout)
        return [Result("broker", FAIL, f"{bootstrap} unreachable: {problem}"),
                Result("topic", SKIP, f"{topic} not checked: broker unreachable")]
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    broker = Result("broker", OK, f"{bootstrap} reachable")
    found = next((t for t in topics if t.get("topic") == topic), None)
    if found is None or found.get("error_code"):
        return [broker, Result("topic", FAIL, f"{topic} does not exist (KAFKA_TOPIC): create it with "
                                              f"{settings.kafka_partitions} partitions (KAFKA_PARTITIONS)")]
    partitions = len(found.get("partitions") or [])
    if partitions != settings.kafka_partitions:
        return [broker, Result("topic", FAIL, f"{topic} has {partitions} partitions, KAFKA_PARTITIONS is "
                                              f"{settings.kafka_partitions}")]
    return [broker, Result("topic", OK, f"{topic} with {partitions} partitions")]


# ---- key sets and clock ----------------------------------------------------------------------------


def clock_skew(date_header: str | None, sent: float, received: float) -> float | None:
    """Seconds our clock is ahead (+) of the server's, from its ``Date`` header (1 s resolution)."""
    if not date_header:
        return None
    try:
        server = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return None
    return (sent + received) / 2 - server


async def check_jwks(name: str, url: str, timeout: float, clock_limit: float | None) -> list[Result]:
    """The key set answers 200 with usable RSA keys; with ``clock_limit``, our clock against its ``Date``."""
    import aiohttp

    from ingest.jwks import JwksError, parse_jwks

    results: list[Result] = []
    try:
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
            sent = time.time()
            async with http.get(url, allow_redirects=False) as response:
                body = await response.content.read(256 * 1024)
                received = time.time()
                status, date = response.status, response.headers.get("Date")
    except Exception as exc:
        results.append(Result(name, FAIL, f"{url} unreachable: {_problem(exc, timeout)}"))
        if clock_limit is not None:
            results.append(Result("clock", SKIP, f"not checked: {url} unreachable"))
        return results
    if status != 200:
        results.append(Result(name, FAIL, f"{url} answered HTTP {status}"))
    else:
        try:
            keys = parse_jwks(body)
            results.append(Result(name, OK, f"{url}: {len(keys)} RSA signing key(s)"))
        except JwksError as exc:
            results.append(Result(name, FAIL, f"{url}: {exc}"))
    if clock_limit is not None:
        skew = clock_skew(date, sent, received)
        if skew is None:
            results.append(Result("clock", WARN, f"not checked: {url} sent no Date header"))
        else:
            ahead = "ahead of" if skew > 0 else "behind"
            text = f"{abs(skew):.1f} s {ahead} {url.split('/')[2]}"
            if abs(skew) > clock_limit:
                results.append(Result("clock", FAIL, f"{text}: tokens will be refused (tolerance {clock_limit:g} s)"))
            elif abs(skew) > CLOCK_WARN_SECONDS:
                results.append(Result("clock", WARN, f"{text}: run NTP"))
            else:
                results.append(Result("clock", OK, text))
    return results


# ---- tenant, spool --------------------------------------------------------------------------------


def budget_results(budget: Budget) -> list[Result]:
    """Canvas's 24-hour deactivation budget as doctor lines: a warning at 10% of either threshold (pure)."""
    warnings = budget.warnings()
    if warnings:
        return [Result("budget", WARN, line) for line in warnings]
    used = ", ".join(f"{r.route}: {r.timeouts} timeouts, {r.errors} errors" for r in budget.routes) or "no answers"
    return [Result("budget", OK, f"last 24 h, every replica: {used} (thresholds {TIMEOUT_THRESHOLD:,} "
                                        f"timeouts / {ERROR_THRESHOLD:,} errors)")]


async def _read_warehouse(settings: Settings, timeout: float, check: str, statement: Any,
                          parameters: dict[str, Any] | None = None) -> list[Any] | Result:
    """The rows of one bounded query of the warehouse, or the line saying why they could not be read."""
    from sqlalchemy.ext.asyncio import create_async_engine

    if settings.database_url is None:
        return Result(check, SKIP, "DATABASE_URL is not set")
    engine = create_async_engine(settings.require_database_url(), connect_args={"timeout": timeout})
    try:
        async with asyncio.timeout(timeout + 1), engine.connect() as conn:
            return list(await conn.execute(statement, parameters or {}))
    except Exception as exc:
        return Result(check, WARN, f"not read: {_problem(exc, timeout)}")
    finally:
        await engine.dispose()


async def check_budget(settings: Settings, timeout: float) -> list[Result]:
    """The answers Canvas counts against the subscription over 24 hours (from ingress_answers)."""
    rows = await _read_warehouse(settings, timeout, "budget", BUDGET_SQL)
    if isinstance(rows, Result):
        return [rows]
    return budget_results(budget_from_rows([dict(r._mapping) for r in rows]))


# ---- which Canvas shard recent events name ----------------------------------------------------------

SHARD_SAMPLE = 10_000  # the latest events read (by received_at, through its index)
SHARDS_SQL = """
    SELECT {schema}.event_shard(format, payload) AS shard, count(*) AS events, min(received_at) AS since
    FROM (SELECT format, payload, received_at FROM {schema}.events
          ORDER BY received_at DESC LIMIT :sample) latest
    GROUP BY 1 ORDER BY 2 DESC, 1
"""


def _shard_list(counts: dict[int, int]) -> str:
    return ", ".join(f"{shard} ({n:,} event{'' if n == 1 else 's'})"
                     for shard, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))


def shard_results(counts: dict[int | None, int], home: int | None, since: str | None = None) -> list[Result]:
    """Which shard(s) the latest events' ids name (``counts``: shard -> events, None: names none),
    against CANVAS_HOME_SHARD (``home``), with what to do about it (pure).

    Unset, each event's own shard counts as home: right while events name one shard, worth pinning;
    two ids for one object once they name several (fail). Set, the home shard should be among them:
    when events name only other shards, every id is stored in global form and joins to Canvas Data 2
    find nothing (fail)."""
    total = sum(counts.values())
    named = {shard: n for shard, n in counts.items() if shard is not None}
    setting = "CANVAS_HOME_SHARD"
    if total == 0:
        return [Result("shards", OK, "no events yet: nothing to check CANVAS_HOME_SHARD against")]
    where = f"the latest {total:,} events" + (f" (since {since})" if since else "")
    if not named:
        return [Result("shards", OK, f"{where} name no shard (local ids only): ids are stored as they come"
                                     + ("" if home is None else f"; {setting}={home}"))]
    listed = _shard_list(named)
    top = max(named, key=lambda shard: (named[shard], -shard))
    replay = "then `canvas-stream replay` to restore one id per object"
    if home is None:
        if len(named) == 1:
            return [Result("shards", WARN, f"{where} name shard {top}; {setting} is unset (each event's own shard "
                                           f"counts as home): set {setting}={top} so a user of another shard "
                                           "never gets two ids")]
        return [Result("shards", FAIL, f"{where} name shards {listed} and {setting} is unset: one object may "
                                       f"have two ids; set {setting} to the institution's shard (most events: "
                                       f"{top}), {replay}")]
    if home not in named:
        return [Result("shards", FAIL, f"{setting}={home}, but {where} name shard(s) {listed}: their ids are "
                                       f"stored in global form and do not join Canvas Data 2's; set {setting}={top} "
                                       f"if that is the institution's shard, {replay}")]
    others = {shard: n for shard, n in named.items() if shard != home}
    return [Result("shards", OK, f"{where} name the home shard {_shard_list({home: named[home]})}"
                                 + (f" and other shards (stored in global form): {_shard_list(others)}" if others
                                    else ""))]


async def check_shards(settings: Settings, timeout: float) -> list[Result]:
    """Which shard the warehouse's latest events name, against CANVAS_HOME_SHARD."""
    from sqlalchemy import text

    from canvas_stream.settings import warehouse_sql

    rows = await _read_warehouse(settings, timeout, "shards", text(warehouse_sql(SHARDS_SQL)),
                                 {"sample": SHARD_SAMPLE})
    if isinstance(rows, Result):
        return [rows]
    since = min((r.since for r in rows), default=None)
    return shard_results({r.shard: r.events for r in rows}, settings.canvas_home_shard,
                         since.strftime("%Y-%m-%d %H:%M UTC") if since is not None else None)


def check_tenant(settings: Settings) -> list[Result]:
    """Canvas signs every institution's events with the same keys: only a binding keeps strangers out."""
    if not settings.live_events_enabled:
        return [Result("tenant", OK, "live events off (LIVE_EVENTS_ENABLED=false): no binding needed")]
    bound = [name.upper() for name in TENANT_SETTINGS if getattr(settings, name)]
    if bound:
        return [Result("tenant", OK, f"bound by {', '.join(bound)}")]
    if settings.live_events_allow_any_account:
        return [Result("tenant", WARN, "LIVE_EVENTS_ALLOW_ANY_ACCOUNT=true: events Canvas signed for any "
                                       "institution are accepted")]
    return [Result("tenant", FAIL, "no tenant binding: set LIVE_EVENTS_ROOT_ACCOUNT_UUIDS (or "
                                   "LIVE_EVENTS_SUBSCRIPTION_IDS), else events Canvas signed for any institution are "
                                   "accepted")]


def check_spool(settings: Settings) -> list[Result]:
    """The spool directory can be created, written and fsynced, and its disk can hold SPOOL_MAX_BYTES."""
    if not settings.spool_dir:
        return [Result("spool", WARN, "SPOOL_DIR is not set: while the broker is down the ingress answers 503")]
    path = Path(settings.spool_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=path)
        try:
            os.write(fd, b"canvas-stream doctor")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return [Result("spool", FAIL, f"{path} not writable (SPOOL_DIR): {exc.strerror or type(exc).__name__}")]
    if free < settings.spool_max_bytes:
        return [Result("spool", WARN, f"{path} writable, but only {free // 2**20} MiB free for SPOOL_MAX_BYTES "
                                      f"{settings.spool_max_bytes // 2**20} MiB")]
    return [Result("spool", OK, f"{path} writable, {free // 2**20} MiB free")]


# ---- all of it ------------------------------------------------------------------------------------


async def run_checks(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> list[Result]:
    """Every check, concurrently (each bounded by ``timeout``), in a fixed order."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors are our FAIL lines
    checks: list[Any] = [
        check_database(settings, timeout),
        check_broker(settings, timeout),
        check_budget(settings, timeout),
        check_shards(settings, timeout),
    ]
    if not settings.live_events_allow_unsigned:
        checks.append(check_jwks("jwks", settings.live_events_jwks_url, timeout,
                                 clock_limit=float(settings.lti_leeway_seconds)))
    if settings.lti_client_id or settings.lti_deployment_ids:
        checks.append(check_jwks("lti jwks", settings.lti_platform_jwks_url, timeout, clock_limit=None))
    results: list[Result] = []
    for found in await asyncio.gather(*checks):
        results.extend(found)
    results.extend(check_tenant(settings))
    results.extend(check_spool(settings))
    return results


def exit_status(results: list[Result]) -> int:
    return EXIT_FAILED if any(r.status in (FAIL, SKIP) for r in results) else EXIT_OK
