"""The optimized path builds byte-identical warehouse tables to the unoptimized path, on the same input.

    .venv/bin/python -m benchmarks.identical [--events 6000]     # exit 1 if any table differs

The input: the corpus's examples and a pool of signed events, each with a fixed receipt time. The
two paths and the comparison are in ``tests/support/identity.py`` (the integration tests use them
too): the record as the ingress used to publish it, ``json.loads`` and the executemany writer,
against the record as it is published now, msgspec and the ``unnest`` writer; every table dumped
in primary-key order and compared row by row, and Canvas event ids recomputed with the stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from canvas_stream.settings import async_database_url
from tests.support.identity import Input, Report, compare, corpus_inputs

__all__ = ["Report", "compare", "corpus_inputs", "main", "pool_inputs"]


def pool_inputs(n: int) -> list[Input]:
    from .pool import build_pool

    pool = build_pool(24_000, log=lambda m: None)
    return [Input(pool.claims(i), pool.claims_json(i), pool.tokens[i].decode()) for i in range(min(n, len(pool)))]


def server_url() -> str:
    import os

    env = os.environ.get("DATABASE_URL", "").strip()
    return async_database_url(env or "postgresql://postgres@127.0.0.1:5432/postgres")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000, help="signed pool events besides the corpus")
    args = parser.parse_args(argv)
    inputs = corpus_inputs() + pool_inputs(args.events)
    report = asyncio.run(compare(server_url(), inputs))
    print(f"{report.events} events, {report.tables} tables, {report.rows} rows compared: "
          f"{'IDENTICAL' if report.identical else 'DIFFERENT'}; Canvas event ids recomputed with the stdlib: "
          f"{report.ids_checked - report.ids_wrong}/{report.ids_checked} match")
    for name, detail in report.differing.items():
        print(f"  {name}: {detail}")
    return 0 if report.identical else 1


if __name__ == "__main__":
    sys.exit(main())
