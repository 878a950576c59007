"""``canvas-stream send`` (registered in cli.py): signed test events to an ingress, one or a load test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from canvas_stream.devkeys import DEV_KEY_FILE
from canvas_stream.send import FORMATS, SendError, copies, event_ids, event_label, example_types, load_events_file
from canvas_stream.settings import get_settings

DEFAULT_KEY = Path(".canvas-stream") / DEV_KEY_FILE
PRINT_EACH_UP_TO = 10


@click.command(name="send")
@click.argument("types", nargs=-1)
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "both"]), default="canvas", show_default=True,
              help="Format of the example events (both: each type in each format).")
@click.option("--file", "file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Send the event(s) in this JSON file (an event or a list; Canvas or Caliper) instead.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many events to send in all, cycling through the chosen ones.")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Events per second (0: as fast as the ingress answers).")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests in flight at most.")
@click.option("--url", default=None, help="Ingress endpoint (default: http://127.0.0.1:$PORT/live-events).")
@click.option("--key", "key_file", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_KEY,
              show_default=True, help="Private key to sign with (`canvas-stream dev` creates it in its data dir).")
@click.option("--issuer", default=None, envvar="LIVE_EVENTS_ISSUER",
              help="iss claim (default: Canvas's live-events issuer).")
@click.option("--keep-ids", is_flag=True, help="Send the events exactly as given (no fresh ids or times).")
@click.option("--list", "list_types", is_flag=True, help="List the example event types and exit.")
def send(types: tuple[str, ...], fmt: str, file: Path | None, count: int, rate: float, concurrency: int,
         url: str | None, key_file: Path, issuer: str | None, keep_ids: bool, list_types: bool) -> None:
    """Sign events with the local test key and POST them to an ingress (default: course_created).

    TYPES are example event types (see --list). Only an ingress that trusts the test key accepts
    them: `canvas-stream dev` does; a production ingress answers 401.
    """
    from canvas_stream.devkeys import dev_kid
    from canvas_stream.keys import KeyFileError, load_private_key
    from canvas_stream.send import load_example, send_events

    if list_types:
        for name in example_types():
            click.echo(name)
        return
    settings = get_settings()
    try:
        if file is not None:
            if types:
                raise SendError("give event TYPES or --file, not both")
            events = load_events_file(file)
        else:
            formats = FORMATS if fmt == "both" else (fmt,)
            events = [load_example(name, f) for name in (types or ("course_created",)) for f in formats]
        key = load_private_key(key_file)
    except SendError as exc:
        raise click.UsageError(str(exc)) from None
    except KeyFileError as exc:
        raise click.UsageError(f"{exc}; `canvas-stream dev` creates the test key (or give --key)") from None
    target = url or f"http://127.0.0.1:{settings.port}/live-events"
    show_each = count <= PRINT_EACH_UP_TO

    def on_answer(event: dict[str, Any], status: str, answer: str) -> None:
        if show_each:
            click.echo(f"{status} {event_label(event)} event_id={','.join(event_ids(event))}  {answer.strip()[:120]}")

    report = asyncio.run(send_events(
        target, copies(events, count, fresh=not keep_ids), key, dev_kid(key),
        issuer=issuer or settings.live_events_issuer, rate=rate, concurrency=concurrency, on_answer=on_answer,
    ))
    for failure in report.failures if not show_each else []:
        click.echo(failure, err=True)
    click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)
