"""The ``canvas-stream`` command: one entry point for every role (click)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from canvas_stream.logs import configure_logging
from canvas_stream.settings import Settings, get_settings


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


@click.group()
@click.version_option(package_name="canvas-stream")
def main() -> None:
    """Canvas Live Events and LTI notices into a PostgreSQL warehouse, through Kafka."""


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".canvas-stream"), show_default=True,
              help="Where the embedded database keeps the warehouse between runs.")
@click.option("--port", type=int, default=None, help="Ingress port (default: $PORT or 8080).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
def dev(data_dir: Path, port: int | None, workers: int) -> None:
    """Run everything on this machine: embedded PostgreSQL and broker, migrations, ingress, worker."""
    import os

    from canvas_stream.dev import run_dev

    if port is not None:
        os.environ["PORT"] = str(port)
        get_settings.cache_clear()
    sys.exit(run_dev(_settings(), data_dir, workers))


@main.command()
@click.option("--port", type=int, default=None, help="Port (default: $PORT or 8080).")
def ingress(port: int | None) -> None:
    """Serve POST /live-events and /lti/notices."""
    from ingest.app import run_ingress

    settings = _settings()
    if port is not None:
        settings = settings.model_copy(update={"port": port})
    run_ingress(settings)


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
    """Rebuild entity and fact tables from the events table (idempotent; safe while workers run)."""
    import asyncio

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
        click.echo(f"replayed {stats.events} events into {stats.rows} rows; {stats.quarantined} quarantined")

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


from canvas_stream.cli_lti import keys, notice_handlers  # noqa: E402  (LTI registration commands)

main.add_command(notice_handlers)
main.add_command(keys)

from canvas_stream.cli_ops import quarantine  # noqa: E402

main.add_command(quarantine)

from canvas_stream.cli_dbt import dbt_command, dbt_sources  # noqa: E402  (analytics layer)

main.add_command(dbt_sources)
main.add_command(dbt_command)

if __name__ == "__main__":
    main()
