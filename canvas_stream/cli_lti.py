"""``canvas-stream notice-handlers ...`` and ``canvas-stream keys ...`` (registered in cli.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from canvas_stream.keys import KeyFileError, generate_private_key, load_private_key, public_jwk
from canvas_stream.lti_handlers import HELLO_WORLD
from canvas_stream.settings import Settings, get_settings

DEFAULT_KEY_FILE = "lti-tool-key.pem"


def _client_settings(pns_url: str | None) -> tuple[Settings, str]:
    """Settings the registration commands need, with a clear message for each missing one."""
    settings = get_settings()
    missing = [name for name, value in (("LTI_CLIENT_ID", settings.lti_client_id),
                                        ("LTI_PRIVATE_KEY_FILE", settings.lti_private_key_file)) if not value]
    url = pns_url or settings.lti_pns_url
    if not url:
        missing.append("LTI_PNS_URL (or --pns-url)")
    if missing:
        raise click.UsageError("not configured: " + ", ".join(missing))
    assert url is not None
    return settings, url


async def _run(settings: Settings, action: str, pns_url: str, **kwargs: Any) -> tuple[dict[str, Any], str | None]:
    """The platform's answer, and (for ``set``) the deployment id it is for when the subscription is
    to be recorded (DATABASE_URL set), read with a GET: Canvas's PUT answer does not name it."""
    # Here, not at the top: aiohttp + PyJWT cost ~0.5 s to import (python -X importtime), and
    # cli.py imports this module for every command.
    from canvas_stream.lti_client import LtiServiceClient, PlatformError

    try:
        key = load_private_key(settings.lti_private_key_file or "")
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    assert settings.lti_client_id is not None
    async with LtiServiceClient(client_id=settings.lti_client_id, token_url=settings.lti_token_url,
                                private_key=key, kid=settings.lti_tool_key_id) as client:
        try:
            if action == "list":
                return await client.list_notice_handlers(pns_url), None
            doc = await client.set_notice_handler(pns_url, **kwargs)
        except PlatformError as exc:
            raise click.ClickException(f"the platform refused: {exc}") from None
        if settings.database_url is None:
            return doc, None
        try:
            deployment = (await client.list_notice_handlers(pns_url)).get("deployment_id")
        except PlatformError as exc:
            click.echo(f"warning: subscribed, but could not read the deployment id to record it: {exc}", err=True)
            return doc, None
        return doc, str(deployment) if deployment not in (None, "") else None


async def _record(settings: Settings, **subscription: Any) -> str | None:
    """Record a subscription in canvas_stream.lti_handler_subscriptions; the problem, or None."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from canvas_stream.lti_handlers import record_subscription

    engine = create_async_engine(settings.require_database_url(), pool_size=1, max_overflow=0)
    try:
        async with asyncio.timeout(20), engine.begin() as conn:
            await record_subscription(conn, **subscription)
    except Exception as exc:  # the subscription itself succeeded: say what was not recorded
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        await engine.dispose()
    return None


async def _hello_world_line(settings: Settings, deployment_id: str | None) -> str:
    """What ``notice-handlers list`` says about the hello-world check of this deployment."""
    if settings.database_url is None:
        return "hello world: not checked (DATABASE_URL not set)"
    if not deployment_id:
        return "hello world: not checked (the platform named no deployment_id)"
    from sqlalchemy.ext.asyncio import create_async_engine

    from canvas_stream.lti_handlers import read_hello_world_checks

    engine = create_async_engine(settings.require_database_url(), pool_size=1, max_overflow=0)
    try:
        async with asyncio.timeout(20), engine.connect() as conn:
            checks = [c for c in await read_hello_world_checks(conn) if c.deployment_id == deployment_id]
    except Exception as exc:
        return f"hello world: not checked (PostgreSQL: {exc.__class__.__name__})"
    finally:
        await engine.dispose()
    if not checks:
        return ("hello world: not checked (no LtiHelloWorldNotice subscription recorded for this deployment: "
                "`canvas-stream notice-handlers set --notice-type LtiHelloWorldNotice --handler ...` records one)")
    return "hello world: " + checks[0].describe(datetime.now(UTC), settings.lti_hello_world_wait_seconds)


@click.group(name="notice-handlers")
def notice_handlers() -> None:
    """Register this receiver with the platform's LTI Platform Notification Service."""


@notice_handlers.command(name="list")
@click.option("--pns-url", default=None, envvar="LTI_PNS_URL", help="platform_notification_service_url.")
@click.option("--json", "as_json", is_flag=True, help="Print the platform's answer as JSON.")
def list_handlers(pns_url: str | None, as_json: bool) -> None:
    """Show the notice types the platform supports and the handler registered for each."""
    settings, url = _client_settings(pns_url)
    doc, _ = asyncio.run(_run(settings, "list", url))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"client_id: {doc.get('client_id')}  deployment_id: {doc.get('deployment_id')}")
    handlers = doc.get("notice_handlers") if isinstance(doc.get("notice_handlers"), list) else []
    width = max([len(str(h.get("notice_type"))) for h in handlers if isinstance(h, dict)] + [11])
    for h in handlers:
        if isinstance(h, dict):
            target = h.get("handler") or "(none)"
            batch = f"  max_batch_size={h['max_batch_size']}" if h.get("max_batch_size") else ""
            click.echo(f"{h.get('notice_type')!s:<{width}}  {target}{batch}")
    deployment = doc.get("deployment_id")
    click.echo(asyncio.run(_hello_world_line(settings, str(deployment) if deployment is not None else None)))


@notice_handlers.command(name="set")
@click.option("--notice-type", required=True, help="e.g. LtiContextCopyNotice.")
@click.option("--handler", required=True, help="Public HTTPS URL of /lti/notices/<deployment_id>; '' removes.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None, help="Canvas requires >= 10.")
@click.option("--pns-url", default=None, envvar="LTI_PNS_URL", help="platform_notification_service_url.")
def set_handler(notice_type: str, handler: str, max_batch_size: int | None, pns_url: str | None) -> None:
    """Subscribe a handler URL to one notice type (an empty --handler unsubscribes)."""
    settings, url = _client_settings(pns_url)
    set_at = datetime.now(UTC)  # before the call: Canvas may send the hello world before it answers
    doc, deployment = asyncio.run(_run(settings, "set", url, notice_type=notice_type, handler=handler,
                                       max_batch_size=max_batch_size))
    if handler:
        click.echo(f"subscribed {doc.get('notice_type', notice_type)} -> {doc.get('handler', handler)}")
        if notice_type == "LtiHelloWorldNotice":
            from processors.warehouse.schema import SCHEMA

            click.echo(f"the platform sends an LtiHelloWorldNotice now: see {SCHEMA}.lti_deployments.hello_world_at")
    else:
        click.echo(f"unsubscribed {doc.get('notice_type', notice_type)}")
    click.echo(json.dumps(doc))
    checked = handler and notice_type == HELLO_WORLD
    if settings.database_url is None:
        if checked:
            click.echo("the platform sends an LtiHelloWorldNotice now: see "
                       "canvas_stream.lti_deployments.hello_world_at "
                       "(set DATABASE_URL to have the ingress check it arrives)")
        return
    if deployment is None:
        return
    problem = asyncio.run(_record(settings, deployment_id=deployment, notice_type=notice_type, handler=handler,
                                  max_batch_size=max_batch_size, pns_url=url, set_at=set_at))
    if problem is not None:
        click.echo(f"warning: subscribed, but not recorded in canvas_stream.lti_handler_subscriptions: {problem}",
                   err=True)
    elif checked:
        click.echo(f"the platform sends an LtiHelloWorldNotice now; the ingress warns (/readyz, "
                   f"canvas_stream_lti_hello_world_overdue_deployments) if none is stored within "
                   f"{settings.lti_hello_world_wait_seconds:g} s; `canvas-stream notice-handlers list` shows it")


@click.group(name="keys")
def keys() -> None:
    """The tool's RSA key pair (signs token assertions; public half at /.well-known/jwks.json)."""


@keys.command(name="generate")
@click.option("--out", type=click.Path(path_type=Path), default=None, envvar="LTI_PRIVATE_KEY_FILE",
              help=f"Private key PEM to create (default: {DEFAULT_KEY_FILE}).")
@click.option("--kid", default=None, envvar="LTI_TOOL_KEY_ID", help="Key id (default: the RFC 7638 thumbprint).")
def generate(out: Path | None, kid: str | None) -> None:
    """Create an RSA 2048 key (0600, never overwritten) and print its public JWK for the developer key."""
    settings = get_settings()
    path = out or Path(settings.lti_private_key_file or DEFAULT_KEY_FILE)
    try:
        key = generate_private_key(path)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    jwk = public_jwk(key, kid or settings.lti_tool_key_id)
    click.echo(f"private key written to {path} (mode 0600); set LTI_PRIVATE_KEY_FILE={path}", err=True)
    click.echo(f"public JWK (kid {jwk['kid']}) for the developer key's Public JWK field:", err=True)
    if kid and kid != settings.lti_tool_key_id:
        click.echo(f"also set LTI_TOOL_KEY_ID={kid} so assertions and the served key set use this kid", err=True)
    click.echo(json.dumps(jwk, indent=2))
