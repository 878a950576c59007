"""py-spy sampling profiles of a running process, summarized by self time and by component."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from .infra import Proc

EXTRA = os.environ.get("BENCH_EXTRA_PATH", "/tmp/cs-bench-tools")

# Innermost match wins (walking from the leaf up), so a frame is charged to the code that asked for
# the work: json.dumps called by records.py counts as "record build", not as stdlib.
COMPONENTS = [
    ("jwt verify (ingest.verify/jwks)", ("ingest/verify.py", "ingest/jwks.py")),
    ("record build/decode + JSON (records, json_codec, live_events)",
     ("canvas_stream/records.py", "canvas_stream/json_codec.py", "ingest/live_events.py")),
    ("ingress handler (ingest/app.py)", ("ingest/app.py",)),
    ("publish (ingest/publish.py)", ("ingest/publish.py",)),
    ("normalize (processors/normalize)", ("processors/normalize/",)),
    ("batch prepare/collapse (processors/batch.py)", ("processors/batch.py",)),
    ("SQLAlchemy (statement build + compile)", ("sqlalchemy/",)),
    ("writer (processors/warehouse)", ("processors/warehouse/",)),
    ("sink (processors/sink.py)", ("processors/sink.py",)),
    ("asyncpg", ("asyncpg/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("structlog/logging", ("structlog/", "logging/")),
    ("faust/mode (stream engine)", ("faust/", "mode/")),
    ("aiohttp", ("aiohttp/",)),
    ("cryptography", ("cryptography",)),
    ("aiokafka", ("aiokafka/",)),
]
# Only when no library or project frame is on the stack (the event loop's own work).
STDLIB = [("asyncio event loop", ("asyncio/",)), ("json", ("json/",))]


def py_spy() -> str | None:
    for candidate in (Path(EXTRA) / "bin" / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def start(pid: int, seconds: float) -> tuple[Proc, Path] | None:
    exe = py_spy()
    if exe is None:
        print("py-spy not found (pip install --target /tmp/cs-bench-tools py-spy); no profile", flush=True)
        return None
    out = Path(tempfile.mkstemp(prefix="pyspy-", suffix=".txt")[1])
    proc = Proc("py-spy", [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                           "--format", "raw", "--output", str(out), "--nonblocking"]).start()
    return proc, out


def finish(handle: tuple[Proc, Path] | None) -> Path | None:
    if handle is None:
        return None
    proc, out = handle
    if proc.alive() and proc.popen is not None:
        proc.popen.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        try:
            proc.popen.wait(20)
        except subprocess.TimeoutExpired:
            proc.stop()
    proc.stop()
    return out


def _component(frames: list[str], components: list[tuple[str, tuple[str, ...]]]) -> str | None:
    for frame in reversed(frames):
        for name, needles in components:
            if any(n in frame for n in needles):
                return name
    return None


def summarize(path: Path | None, top: int = 12) -> dict[str, object]:
    """Share of samples per component (inclusive, first match from the leaf) and top self frames."""
    if path is None or not path.exists():
        return {}
    self_time: Counter[str] = Counter()
    component: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        self_time[leaf.split(" (")[0] + " (" + leaf.rsplit("/", 1)[-1] if "(" in leaf else leaf] += count
        if any("select" in f and "selectors" in f for f in frames[-2:]) or "epoll" in leaf:
            component["idle (selector wait)"] += count
            continue
        name = _component(frames, COMPONENTS) or _component(frames, STDLIB)
        component[name or "other (stdlib/uncategorised)"] += count
    if not total:
        return {}
    return {
        "samples": total,
        "components_pct": {k: round(100 * v / total, 1) for k, v in component.most_common()},
        "top_self_pct": {k[:110]: round(100 * v / total, 1) for k, v in self_time.most_common(top)},
        "raw": str(path),
    }
