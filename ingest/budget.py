"""Canvas's deactivation limits as arithmetic (pure: no I/O).

Canvas switches a Live Events subscription off after about 9,500 timeouts or 28,000 other errors in
24 hours ("it is the end user's responsibility to implement logging on their endpoints to alert
them"). Canvas counts what it sees: an answer slower than 15 s is a timeout whatever its status;
any other non-2xx answer is an error. Our 403 refusals of a foreign tenant are counted apart: they
weigh on the sender's subscription, not on ours.

Each ingress replica tallies its answers per minute, route and status code here, and
:mod:`ingest.answers` upserts the tallies into ``canvas_stream.ingress_answers``; the 24-hour figures are
sums over that table, so they cover every replica and survive restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CANVAS_TIMEOUT_SECONDS = 15.0
TIMEOUT_THRESHOLD = 9_500
ERROR_THRESHOLD = 28_000
WARN_FRACTION = 0.10
FOREIGN_TENANT_STATUS = 403

TIMEOUT = "timeout"
ERROR = "error"
FOREIGN_TENANT = "foreign_tenant"
THRESHOLDS = {TIMEOUT: TIMEOUT_THRESHOLD, ERROR: ERROR_THRESHOLD}

# The routes Canvas delivers to (route templates, as aiohttp names them). Health, readiness and
# admin routes are not Canvas's business.
COUNTED_ROUTES = frozenset({"/live-events", "/lti/notices", "/lti/notices/{deployment_id}"})


def classify(code: int, seconds: float) -> str | None:
    """What Canvas makes of one answer: timeout, error, foreign_tenant, or None (it counts as fine)."""
    if code == FOREIGN_TENANT_STATUS:
        return FOREIGN_TENANT
    if seconds >= CANVAS_TIMEOUT_SECONDS:
        return TIMEOUT
    if not 200 <= code < 300:
        return ERROR
    return None


@dataclass
class Counts:
    """Answers of one (minute, route, code) on one replica; ``slow`` of them took 15 s or more."""

    answers: int = 0
    slow: int = 0


Key = tuple[int, str, int]  # (minute as unix seconds, route, code)


@dataclass
class Tally:
    """This replica's answers per minute, route and code: absolute counts, so re-sending is harmless."""

    counts: dict[Key, Counts] = field(default_factory=dict)
    dirty: set[Key] = field(default_factory=set)

    def record(self, route: str, code: int, seconds: float, now: float) -> None:
        key = (int(now // 60) * 60, route, code)
        counts = self.counts.setdefault(key, Counts())
        counts.answers += 1
        if seconds >= CANVAS_TIMEOUT_SECONDS:
            counts.slow += 1
        self.dirty.add(key)

    def take_dirty(self) -> list[tuple[Key, Counts]]:
        """The rows changed since the last call (copies); put them back with :meth:`mark_dirty` on failure."""
        keys, self.dirty = self.dirty, set()
        return [(k, Counts(self.counts[k].answers, self.counts[k].slow)) for k in sorted(keys) if k in self.counts]

    def mark_dirty(self, keys: Iterable[Key]) -> None:
        self.dirty.update(k for k in keys if k in self.counts)

    def forget_before(self, minute: int) -> None:
        """Drop minutes older than ``minute`` that are stored (not dirty): bounded memory."""
        for key in [k for k in self.counts if k[0] < minute and k not in self.dirty]:
            del self.counts[key]


@dataclass(frozen=True)
class RouteBudget:
    """One route's answers over the last 24 hours, as Canvas counts them."""

    route: str
    timeouts: int = 0
    errors: int = 0
    foreign_tenant: int = 0

    def used(self, kind: str) -> int:
        return self.timeouts if kind == TIMEOUT else self.errors


@dataclass(frozen=True)
class Budget:
    """The 24-hour figures of every route, and the warnings they call for."""

    routes: tuple[RouteBudget, ...]

    def warnings(self) -> list[str]:
        """One line per route and kind at or past ``WARN_FRACTION`` of Canvas's threshold."""
        out: list[str] = []
        for r in self.routes:
            for kind, threshold in THRESHOLDS.items():
                used = r.used(kind)
                if used >= WARN_FRACTION * threshold:
                    out.append(f"{r.route}: {used} {kind}s in 24 h ({100 * used / threshold:.0f}% of Canvas's "
                               f"deactivation threshold of {threshold})")
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "thresholds": dict(THRESHOLDS),
            "routes": {r.route: {"timeouts": r.timeouts, "errors": r.errors, "foreign_tenant": r.foreign_tenant}
                       for r in self.routes},
            "warnings": self.warnings(),
        }


def budget_from_rows(rows: Iterable[Mapping[str, object]]) -> Budget:
    """Build a :class:`Budget` from rows of ``route, timeouts, errors, foreign_tenant``."""
    routes = [
        RouteBudget(str(r["route"]), int(r["timeouts"] or 0), int(r["errors"] or 0),  # type: ignore[call-overload]
                    int(r["foreign_tenant"] or 0))  # type: ignore[call-overload]
        for r in rows
    ]
    return Budget(tuple(sorted(routes, key=lambda r: r.route)))
