"""A worker stopped as compose stops it (SIGTERM) finishes cleanly: exit code 0, no crash.

The worker stops itself on a failed write (processors/app.py); an ordinary stop must not look like
one, or every deploy would read as a crash and a supervisor would count restarts that never were.
"""

from __future__ import annotations

import asyncio
import signal

from tests.support.events import example, ingress_and_worker, signed
from tests.support.procs import wait_until


async def test_sigterm_stops_the_worker_with_exit_code_0(kafka_bootstrap, topic, migrated_database_url, engine):
    async with ingress_and_worker(kafka_bootstrap, topic, migrated_database_url) as (client, worker):
        response = await client.post("/live-events", data=signed(example("canvas", "course_created")))
        assert response.status == 200, await response.text()

        async def stored() -> bool:
            async with engine.connect() as conn:
                return (await conn.exec_driver_sql("select count(*) from canvas_stream.events")).scalar_one() == 1

        await wait_until(stored, timeout=60, message=f"the event stored\n{worker.output()}")
        worker.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.proc.wait, 30)
        output = worker.output()
        assert code == 0, output
        assert "Crashed" not in output and "crash" not in output.lower(), output
