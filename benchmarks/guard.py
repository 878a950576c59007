"""Regression guard: CPU microseconds per event of the ingress and the worker, against recorded figures.

    .venv/bin/python -m benchmarks.guard              # 3 interleaved runs; exit 1 if a role got >25% costlier
    .venv/bin/python -m benchmarks.guard --record     # measure and write the figures to cpu_baseline.json

CPU time per event, not events per second: the machine is shared, so rates move by a third between
runs while the CPU a process spends on an event moves much less. Each run starts the real CLI
(``canvas-stream ingress`` under 64 connections of signed events, then ``canvas-stream worker``
draining what that ingress published), and counts only the CPU spent while events flowed (from
the first load to the last answer; from the worker's first committed offset to its last). The
runs alternate ingress, worker, ingress, worker, ... so a burst of the other engineers' load hits
both roles alike; the median of the runs is compared. A shared VM also changes speed by 2-3x from
one hour to the next, so a fixed stdlib workload is timed before and after (``calibrate``) and the
figures are compared at the recorded machine speed. Not a timed test: it prints and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canvas_stream.embedded.broker import EmbeddedKafka
from canvas_stream.embedded.process import free_port
from ingest.publish import ensure_topic

from . import infra, load
from .pool import ISSUER, Pool, build_pool

BASELINE = Path(__file__).with_name("cpu_baseline.json")
TOLERANCE = 0.25
PARTITIONS = 6


@dataclass
class RoleRun:
    cpu_us_per_event: float
    events: int
    rate: float


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LTI_", "LIVE_EVENTS_", "KAFKA_", "WORKER_", "DATABASE_URL"))}
    env.update(LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", **extra)
    return env


async def _offsets(bootstrap: str, topic: str, group: str | None) -> int:
    """Sum of the end offsets of ``topic`` (group None) or of ``group``'s committed offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        if group is None:
            return sum((await consumer.end_offsets(parts)).values())
        return sum([(await consumer.committed(tp)) or 0 for tp in parts])
    finally:
        await consumer.stop()


class Guard:
    def __init__(self, pool: Pool, kafka: str, pg: infra.Postgres, jwks_url: str, seconds: float) -> None:
        self.pool, self.kafka, self.pg, self.jwks_url, self.seconds = pool, kafka, pg, jwks_url, seconds

    def _under_load(self, proc: infra.Proc, port: int, probe: str) -> tuple[float, load.LoadResult]:
        """Once ``probe`` answers, the pool's tokens posted for ``self.seconds`` (closed loop): the
        CPU seconds the process spent meanwhile, and what the load saw."""
        infra.wait_http(f"http://127.0.0.1:{port}{probe}", proc=proc)
        cpu0 = proc.cpu_seconds()
        res = load.closed_loop(f"http://127.0.0.1:{port}/live-events", self.pool.tokens_path, self.pool.tokens,
                               self.seconds)
        return proc.cpu_seconds() - cpu0, res

    def ingress(self) -> tuple[RoleRun, str, int]:
        """The ingress under load into a fresh topic: CPU per accepted event, and the topic it filled."""
        topic = f"guard-{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topic(self.kafka, topic, PARTITIONS))
        port = free_port()
        env = _env(KAFKA_BOOTSTRAP_SERVERS=self.kafka, KAFKA_TOPIC=topic, LIVE_EVENTS_JWKS_URL=self.jwks_url,
                   LIVE_EVENTS_ISSUER=ISSUER, HOST="127.0.0.1", PORT=str(port), LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true")
        proc = infra.Proc("guard-ingress", infra.cli_cmd("ingress", "--port", str(port)), env).start()
        try:
            cpu, res = self._under_load(proc, port, "/readyz")
            if res.ok == 0:
                raise RuntimeError(f"the ingress accepted nothing:\n{proc.output()}")
        finally:
            proc.stop()
        records = asyncio.run(_offsets(self.kafka, topic, None))
        return RoleRun(cpu / res.ok * 1e6, res.ok, res.rate), topic, records

    def worker(self, topic: str, records: int) -> RoleRun:
        """One worker drains ``topic``: CPU per record between its first and last offset commit."""
        group = f"guard-{uuid.uuid4().hex[:8]}"
        port = free_port()
        env = _env(KAFKA_BOOTSTRAP_SERVERS=self.kafka, KAFKA_TOPIC=topic, KAFKA_PARTITIONS=str(PARTITIONS),
                   DATABASE_URL=self.pg.url, WORKER_GROUP_ID=group, WORKER_STATUS_PORT=str(port),
                   WORKER_SESSION_TIMEOUT_SECONDS="10")
        proc = infra.Proc("guard-worker", infra.cli_cmd("worker"), env).start()
        try:
            first: tuple[float, float, int] | None = None  # (time, cpu, committed) at the first commit
            last = (0.0, 0.0, 0)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                committed = asyncio.run(_offsets(self.kafka, topic, group))
                now, cpu = time.monotonic(), proc.cpu_seconds()
                if committed and first is None:
                    first = (now, cpu, committed)
                if committed != last[2]:
                    last = (now, cpu, committed)
                if committed >= records:
                    break
                if not proc.alive():
                    raise RuntimeError(f"the worker died:\n{proc.output()}")
                time.sleep(0.2)
            if first is None or last[2] - first[2] <= 0:
                raise RuntimeError(f"the worker committed {last[2]} of {records} records:\n{proc.output()}")
        finally:
            proc.stop()
        events = last[2] - first[2]
        return RoleRun((last[1] - first[1]) / events * 1e6, events, events / max(last[0] - first[0], 1e-6))

    def minimal_ingress(self) -> RoleRun:
        """The minimal verify+produce handler (benchmarks/minimal.py) under the same load."""
        topic = f"guard-min-{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topic(self.kafka, topic, PARTITIONS))
        port = free_port()
        proc = infra.Proc("guard-min-ingress", infra.python_cmd(
            "-m", "benchmarks.minimal", "verify-produce", "--port", str(port), "--jwks", self.jwks_url,
            "--bootstrap", self.kafka, "--topic", topic), _env()).start()
        try:
            cpu, res = self._under_load(proc, port, "/healthz")
        finally:
            proc.stop()
        return RoleRun(cpu / max(res.ok, 1) * 1e6, res.ok, res.rate)

    def faust_noop(self, topic: str, records: int) -> RoleRun:
        """A faust agent that does nothing with take_events batches, on the topic the worker drained."""
        proc = infra.Proc("guard-faust-noop", infra.python_cmd(
            "-m", "benchmarks.minimal", "faust-noop", "--take", "--bootstrap", self.kafka, "--topic", topic,
            "--group", f"noop-{uuid.uuid4().hex[:8]}", "--expect", str(records)), _env()).start()
        try:
            first: tuple[float, float, int] | None = None
            last = (0.0, 0.0, 0)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                lines = [ln for ln in proc.output(2000).splitlines() if ln.startswith("PROGRESS")]
                n = int(lines[-1].split()[1]) if lines else 0
                now, cpu = time.monotonic(), proc.cpu_seconds()
                if n and first is None:
                    first = (now, cpu, n)
                if n != last[2]:
                    last = (now, cpu, n)
                if n >= records or not proc.alive():
                    break
                time.sleep(0.1)
        finally:
            proc.stop()
        if first is None or last[2] <= first[2]:
            raise RuntimeError(f"faust no-op consumed nothing:\n{proc.output()}")
        events = last[2] - first[2]
        return RoleRun((last[1] - first[1]) / events * 1e6, events, events / max(last[0] - first[0], 1e-6))

    def run(self, reps: int) -> dict[str, list[RoleRun]]:
        runs: dict[str, list[RoleRun]] = {"ingress": [], "worker": []}
        for rep in range(reps):
            ingress, topic, records = self.ingress()
            runs["ingress"].append(ingress)
            print(f"  run {rep + 1}/{reps} ingress {ingress.cpu_us_per_event:6.1f} us/event "
                  f"({ingress.events} events, {ingress.rate:,.0f}/s)", flush=True)
            worker = self.worker(topic, records)
            runs["worker"].append(worker)
            print(f"  run {rep + 1}/{reps} worker  {worker.cpu_us_per_event:6.1f} us/event "
                  f"({worker.events} events, {worker.rate:,.0f}/s)", flush=True)
        return runs


def calibrate(rounds: int = 3) -> float:
    """CPU milliseconds of a fixed stdlib workload (JSON, dicts, a loop) in this process: how fast the
    machine runs Python right now. A shared VM's vCPU can run 2-3x slower from one hour to the next;
    CPU per event scales with it, so the guard compares CPU per event in units of this figure."""
    document = {"metadata": {"event_name": "asset_accessed", "user_id": "21070000000000001", "n": 1.5},
                "body": {f"key_{i}": [i, str(i), None, {"x": i * 0.5}] for i in range(40)}}
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for i in range(300):
            decoded = json.loads(json.dumps(document, sort_keys=True))
            total = sum(len(k) + (v[0] if isinstance(v, list) else 0) for k, v in decoded["body"].items())
            decoded["metadata"]["n"] += total + i
        best = min(best, time.process_time() - started)
    return best * 1000


def judge(medians: dict[str, float], recorded: dict[str, Any], tolerance: float = TOLERANCE,
          calibration_ms: float | None = None) -> list[str]:
    """The roles whose median CPU per event exceeds the recorded figure by more than ``tolerance``;
    both in units of the machine's speed when both runs have a calibration figure."""
    failures = []
    ref_calibration = recorded.get("recorded", {}).get("calibration_ms")
    scale = ref_calibration / calibration_ms if calibration_ms and ref_calibration else 1.0
    for role, value in medians.items():
        ref = recorded.get(role, {}).get("cpu_us_per_event")
        if ref and value * scale > ref * (1 + tolerance):
            failures.append(f"{role}: {value:.1f} us/event ({value * scale:.1f} at the recorded machine speed) is "
                            f"{value * scale / ref - 1:+.0%} against the recorded {ref:.1f} (limit {tolerance:+.0%})")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per role (median taken)")
    parser.add_argument("--seconds", type=float, default=8.0, help="ingress load per run (also what the worker drains)")
    parser.add_argument("--record", action="store_true", help=f"write the medians to {BASELINE.name}")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    args = parser.parse_args(argv)
    infra.install_signal_handlers()
    try:
        pool = build_pool(24_000, log=lambda m: print(m, flush=True))
        with infra.JwksHttp([pool.jwk()]) as jwks, EmbeddedKafka() as kafka, infra.Postgres() as pg:
            guard = Guard(pool, kafka.bootstrap_servers, pg, jwks.url, args.seconds)
            calibrations = [calibrate()]
            runs = guard.run(args.runs)
            calibrations.append(calibrate())
    finally:
        infra.stop_all()
    calibration = statistics.median(calibrations)
    medians = {role: statistics.median(r.cpu_us_per_event for r in values) for role, values in runs.items()}
    print("\nCPU us/event, median of", args.runs, "interleaved runs:")
    recorded = json.loads(args.baseline.read_text()) if args.baseline.exists() else {}
    ref_calibration = recorded.get("recorded", {}).get("calibration_ms")
    scale = ref_calibration / calibration if ref_calibration else 1.0
    print(f"  machine speed: calibration {calibration:.1f} ms"
          + (f" (recorded {ref_calibration:.1f} ms: figures x{scale:.2f} at the recorded speed)" if ref_calibration
             else ""))
    for role, value in medians.items():
        ref = recorded.get(role, {}).get("cpu_us_per_event")
        against = f"  recorded {ref:.1f} ({value * scale / ref - 1:+.0%} at equal speed)" if ref else \
            "  (nothing recorded)"
        print(f"  {role:8} {value:7.1f}{against}   runs {[round(r.cpu_us_per_event, 1) for r in runs[role]]}")
    if args.record:
        import os
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=infra.ROOT).stdout.strip()
        out = {role: {"cpu_us_per_event": round(value, 1), "runs": [round(r.cpu_us_per_event, 1) for r in runs[role]]}
               for role, value in medians.items()}
        out["recorded"] = {"commit": commit, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
                           "calibration_ms": round(calibration, 2)}
        args.baseline.write_text(json.dumps(out, indent=1) + "\n")
        print(f"recorded in {args.baseline}")
        return 0
    failures = judge(medians, recorded, calibration_ms=calibration)
    if failures:
        print("\nREGRESSION: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("ok: no role is more than 25% costlier than recorded" if recorded else "nothing recorded to compare")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
