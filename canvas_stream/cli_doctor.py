"""``canvas-stream doctor`` (registered in cli.py)."""

from __future__ import annotations

import asyncio
import sys

import click

from canvas_stream.doctor import DEFAULT_TIMEOUT, EXIT_BAD_SETTINGS, exit_status, required_settings_missing, run_checks


@click.command(name="doctor")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds each check may take.")
def doctor(timeout: float) -> None:
    """Check what this deployment needs; one line per check. Exit 0 all ok, 1 a check failed, 2 bad settings."""
    from pydantic import ValidationError

    from canvas_stream.cli_errors import settings_problems
    from canvas_stream.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = settings_problems(exc)
    else:
        problems = required_settings_missing(settings)
    if problems:
        for problem in problems:
            click.echo(f"FAIL  settings  {problem}")
        sys.exit(EXIT_BAD_SETTINGS)
    click.echo("ok    settings  valid")
    results = asyncio.run(run_checks(settings, timeout))
    for result in results:
        click.echo(result.line())
    sys.exit(exit_status(results))
