"""The analytics layer's commands: ``canvas-stream dbt-sources [--check]`` and ``canvas-stream dbt ARGS``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from canvas_stream.dbt_runner import run_dbt
from canvas_stream.dbt_sources import render
from canvas_stream.logs import configured_settings


@click.command(name="dbt-sources")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              default=Path("dbt/models/sources.yml"), show_default=True, help="Where to write ('-' for stdout).")
@click.option("--check", is_flag=True, help="Only compare: exit 1 when the file is not what would be written.")
def dbt_sources(out: Path, check: bool) -> None:
    """Write the dbt project's sources.yml from the table definitions (tables, columns, keys, comments)."""
    text = render()
    if check:
        if not out.is_file() or out.read_text() != text:
            raise click.ClickException(f"{out} is out of date: run canvas-stream dbt-sources --out {out}")
        click.echo(f"{out} is up to date")
    elif str(out) == "-":
        click.echo(text, nl=False)
    else:
        out.write_text(text)


@click.command(name="dbt", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--project-dir", type=click.Path(path_type=Path, file_okay=False, exists=True), default=Path("dbt"),
              show_default=True, help="The dbt project.")
@click.option("--target-schema", default="analytics", show_default=True, help="Schema dbt builds its models in.")
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
def dbt_command(project_dir: Path, target_schema: str, dbt_args: tuple[str, ...]) -> None:
    """Run dbt on DATABASE_URL's warehouse (default `build`), with dbt from .venv-dbt or PATH."""
    url = configured_settings().database_url
    if url is None:
        raise click.ClickException("DATABASE_URL is not set")
    try:
        result = run_dbt(list(dbt_args) or ["build"], url.get_secret_value(), project_dir=project_dir,
                         target_schema=target_schema)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(result.returncode)
