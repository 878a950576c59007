"""Run the real CLI with one experimental change, to measure a suggestion without editing shared code.

``python -m benchmarks.wrap [--uvloop] [--linger MS] [--orjson] [--no-raw] [--session-timeout S] -- ingress|worker ...``
uvloop/orjson come from ``BENCH_EXTRA_PATH`` (e.g. ``pip install --target /tmp/cs-bench-tools uvloop orjson``).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--")
    opts, rest = argv[:split], argv[split + 1:]
    extra = os.environ.get("BENCH_EXTRA_PATH")
    if extra:
        sys.path.append(extra)
    if "--uvloop" in opts:
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if "--linger" in opts:
        linger = int(opts[opts.index("--linger") + 1])
        import aiokafka

        original = aiokafka.AIOKafkaProducer.__init__

        def patched(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            kwargs["linger_ms"] = linger
            original(self, *args, **kwargs)

        aiokafka.AIOKafkaProducer.__init__ = patched  # type: ignore[method-assign]
    if "--orjson" in opts:
        import orjson

        from canvas_stream import records

        def to_bytes(self) -> bytes:  # type: ignore[no-untyped-def]
            from dataclasses import asdict

            return orjson.dumps(asdict(self))

        records.Record.to_bytes = to_bytes  # type: ignore[method-assign]
        import json
        import types

        records.json = types.SimpleNamespace(loads=orjson.loads, dumps=json.dumps)  # type: ignore[assignment]
    if "--no-raw" in opts:
        from ingest import live_events

        original_build = live_events.build_record

        def build_record(payload, verification, raw, received_at=None):  # type: ignore[no-untyped-def]
            key, record = original_build(payload, verification, b"", received_at)
            return key, record

        live_events.build_record = build_record
        import ingest.app

        ingest.app.build_record = build_record  # type: ignore[attr-defined]
    if "--session-timeout" in opts:
        # tansu answers a new consumer group's first JoinGroup only after half the session timeout
        # (faust's default 60 s -> 30 s of dead time per start); this changes nothing else.
        seconds = float(opts[opts.index("--session-timeout") + 1])
        import faust

        original_app = faust.App.__init__

        def app_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            kwargs.setdefault("broker_session_timeout", seconds)
            original_app(self, *args, **kwargs)

        faust.App.__init__ = app_init  # type: ignore[method-assign]
    if "--fast-record" in opts:
        from benchmarks import patches

        patches.fast_record_to_bytes()
    if "--executemany-writer" in opts:
        from benchmarks import patches

        patches.executemany_writer()
    if "--unnest-writer" in opts:
        from benchmarks import patches

        patches.unnest_writer()
    sys.argv = ["canvas-stream", *rest]
    from canvas_stream.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
