"""``canvas-stream erase``: remove or redact one person across the warehouse (docs/privacy.md).

It opens its own engine, does one job and prints per table what it did (or, with ``--dry-run``,
what it would do). The ids' stored form follows ``CANVAS_HOME_SHARD``, as the workers' does.
"""

from __future__ import annotations

import asyncio

import click

from canvas_stream.logs import configured_settings as _settings

# The database client and the warehouse are imported inside the command (see cli.py).


@click.command(name="erase")
@click.option("--user-id", type=int, required=True,
              help="Canvas user id, global (21070000000000123) or local (123, as the Canvas UI shows it).")
@click.option("--requested-by", required=True,
              help="Who asked (an officer, a ticket number): recorded in the audit row. Never the person's own data.")
@click.option("--shard", type=int, default=None,
              help="Shard of a local id (default: CANVAS_HOME_SHARD, else inferred from the warehouse).")
@click.option("--login", "logins", multiple=True, help="Also find this login (repeatable).")
@click.option("--email", "emails", multiple=True, help="Also find this email (repeatable).")
@click.option("--name", "names", multiple=True, help="Also find this name where the person is otherwise named.")
@click.option("--identifier", "identifiers", multiple=True, help="Also find this LTI user id, uuid or SIS id.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted and redacted; change nothing.")
def erase(user_id: int, requested_by: str, shard: int | None, logins: tuple[str, ...], emails: tuple[str, ...],
          names: tuple[str, ...], identifiers: tuple[str, ...], dry_run: bool) -> None:
    """Remove or redact one person across every table (docs/privacy.md); workers redact later events."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from processors.privacy.erasure import ErasureError, ErasureReport, ErasureRequest
    from processors.privacy.erasure import erase as run_erase

    settings = _settings()
    request = ErasureRequest(user_id, requested_by, shard, logins, emails, names, identifiers)

    async def go() -> ErasureReport:
        engine = create_async_engine(settings.require_database_url(), pool_size=2)
        try:
            return await run_erase(engine, request, home_shard=settings.canvas_home_shard, dry_run=dry_run)
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(go())
    except ErasureError as exc:
        raise click.UsageError(str(exc)) from exc
    if not report.shard_known:
        click.echo("warning: the global form of this local id is unknown (give --shard or set CANVAS_HOME_SHARD): "
                   "only the local form was matched", err=True)
    for line in report.lines():
        click.echo(line)
    if report.erasure_id:
        click.echo(f"erasure {report.erasure_id} recorded; later events for this person are redacted on arrival")
