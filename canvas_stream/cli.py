"""The ``canvas-stream`` command: one entry point for every role (click).

Each command imports its role's code inside the command, not at the top: measured with
``python -X importtime`` (2 shared cores, loaded), this module costs ~0.7 s, while ingest.app adds
~1.2 s, processors.app ~1.2 s, canvas_stream.migrate (alembic) ~0.8 s and processors.replay ~0.9 s;
``canvas-stream settings`` or a ``--help`` would pay for all of them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from canvas_stream.cli_dbt import dbt_command, dbt_sources
from canvas_stream.cli_doctor import doctor
from canvas_stream.cli_errors import CONTEXT_SETTINGS, FriendlyGroup, show_envvars
from canvas_stream.cli_history import partitions_group, retention_group
from canvas_stream.cli_lti import keys, notice_handlers
from canvas_stream.cli_ops import quarantine
from canvas_stream.cli_privacy import erase
from canvas_stream.cli_send import send
from canvas_stream.logs import configured_settings as _settings
from canvas_stream.settings import Settings, get_settings
from canvas_stream.tenancy import binding_problem


@click.group(cls=FriendlyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="canvas-stream")
def main() -> None:
    """Canvas Live Events and LTI notices into a PostgreSQL warehouse, through Kafka."""


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".canvas-stream"), show_default=True,
              help="Where the embedded database keeps the warehouse between runs.")
@click.option("--port", type=int, default=None, envvar="PORT", help="Ingress port (default: 8080).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
def dev(data_dir: Path, port: int | None, workers: int) -> None:
    """Run everything on this machine: embedded PostgreSQL and broker, migrations, ingress, worker."""
    from canvas_stream.dev import run_dev

    if port is not None:
        os.environ["PORT"] = str(port)
        get_settings.cache_clear()
    sys.exit(run_dev(_settings(), data_dir, workers))


@main.command()
@click.option("--port", type=int, default=None, envvar="PORT", help="Port (default: 8080).")
def ingress(port: int | None) -> None:
    """Serve POST /live-events and /lti/notices."""
    from ingest.serve import run_ingress
    from processors.warehouse.notice_ledger import WarehouseNoticeLedger

    settings = _settings()
    _require_binding(settings)
    if port is not None:
        settings = settings.model_copy(update={"port": port})
    # With a warehouse, a restarted ingress still answers "duplicate" for notices stored before.
    ledger = WarehouseNoticeLedger(settings.require_database_url()) if settings.database_url is not None else None
    run_ingress(settings, notice_ledger=ledger)


def _require_binding(settings: Settings, *, serves_live_events: bool | None = None) -> None:
    """Secure by default: a role receiving live events does not start unbound (exit status 2)."""
    problem = binding_problem(settings, serves_live_events=serves_live_events)
    if problem is not None:
        click.echo(f"canvas-stream: {problem}", err=True)
        sys.exit(2)


@main.command()
def sqs() -> None:
    """Long-poll the SQS queues of SQS_QUEUE_URLS and publish their live events (run several to scale out)."""
    from ingest.sqs import run_sqs

    settings = _settings()
    _require_binding(settings, serves_live_events=True)
    sys.exit(run_sqs(settings))


@main.command()
def worker() -> None:
    """Consume verified deliveries and upsert them into PostgreSQL (run several to scale out)."""
    from processors.app import run_worker

    settings = _settings()
    sys.argv = [sys.argv[0]]  # faust's Worker reads argv; keep ours out of it
    run_worker(settings)


@main.command(name="migrate")
@click.option("--revision", default="head", show_default=True)
def migrate_command(revision: str) -> None:
    """Apply the Alembic migrations (alembic upgrade head)."""
    from canvas_stream import migrate

    settings = _settings()
    migrate.upgrade(settings.require_database_url(), revision)
    click.echo(f"database migrated to {revision}")


@main.command()
@click.option("--keep", is_flag=True, help="Only fill what is missing; do not empty the derived tables first.")
@click.option("--page-size", type=int, default=2000, show_default=True)
def replay(keep: bool, page_size: int) -> None:
    """Rebuild the warehouse from events, as the live path built it (idempotent; safe while workers run)."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from tqdm import tqdm

    from processors.normalize import IdPolicy
    from processors.replay import count_events
    from processors.replay import replay as run_replay

    settings = _settings()
    ids = IdPolicy(settings.canvas_home_shard)

    async def go() -> None:
        engine = create_async_engine(settings.require_database_url())
        try:
            total = await count_events(engine)
            with tqdm(total=total, unit="event", desc="replay") as bar:
                stats = await run_replay(engine, ids, rebuild=not keep, page_size=page_size, progress=bar.update)
        finally:
            await engine.dispose()
        click.echo(f"replayed {stats.events} events into {stats.rows} rows; {stats.events_updated} events rewritten, "
                   f"{stats.entities_moved} entity describes moved to caliper_entities; "
                   f"{stats.quarantined} quarantined")

    asyncio.run(go())


@main.command(name="data-dictionary")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write here instead of stdout.")
def data_dictionary(out: Path | None) -> None:
    """Print (or write) docs/warehouse.md: every table, column, type and the events that feed it."""
    from canvas_stream.datadict import render

    text = render()
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)


@main.command(name="settings")
def show_settings() -> None:
    """Print the settings in force (secrets masked)."""
    for name, value in sorted(_settings().masked().items()):
        click.echo(f"{name.upper()}={'' if value is None else value}")


for command in (notice_handlers, keys, quarantine, send, doctor, dbt_sources, dbt_command, erase, partitions_group,
                retention_group):
    main.add_command(command)
show_envvars(main)

if __name__ == "__main__":
    main()
