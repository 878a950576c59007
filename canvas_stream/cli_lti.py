"""``canvas-stream notice-handlers ...`` and ``canvas-stream keys ...`` (registered in cli.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

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


async def _run(settings: Settings, action: str, pns_url: str, **kwargs: Any) -> dict[str, Any]:
    from canvas_stream.keys import KeyFileError, load_private_key
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
                return await client.list_notice_handlers(pns_url)
            return await client.set_notice_handler(pns_url, **kwargs)
        except PlatformError as exc:
            raise click.ClickException(f"the platform refused: {exc}") from None


@click.group(name="notice-handlers")
def notice_handlers() -> None:
    """Register this receiver with the platform's LTI Platform Notification Service."""


@notice_handlers.command(name="list")
@click.option("--pns-url", default=None, help="platform_notification_service_url (default: $LTI_PNS_URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the platform's answer as JSON.")
def list_handlers(pns_url: str | None, as_json: bool) -> None:
    """Show the notice types the platform supports and the handler registered for each."""
    settings, url = _client_settings(pns_url)
    doc = asyncio.run(_run(settings, "list", url))
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


@notice_handlers.command(name="set")
@click.option("--notice-type", required=True, help="e.g. LtiContextCopyNotice.")
@click.option("--handler", required=True, help="Public HTTPS URL of /lti/notices/<deployment_id>; '' removes.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None, help="Canvas requires >= 10.")
@click.option("--pns-url", default=None, help="platform_notification_service_url (default: $LTI_PNS_URL).")
def set_handler(notice_type: str, handler: str, max_batch_size: int | None, pns_url: str | None) -> None:
    """Subscribe a handler URL to one notice type (an empty --handler unsubscribes)."""
    settings, url = _client_settings(pns_url)
    doc = asyncio.run(_run(settings, "set", url, notice_type=notice_type, handler=handler,
                           max_batch_size=max_batch_size))
    if handler:
        click.echo(f"subscribed {doc.get('notice_type', notice_type)} -> {doc.get('handler', handler)}")
        if notice_type == "LtiHelloWorldNotice":
            from processors.warehouse.schema import SCHEMA

            click.echo(f"the platform sends an LtiHelloWorldNotice now: see {SCHEMA}.lti_deployments.hello_world_at")
    else:
        click.echo(f"unsubscribed {doc.get('notice_type', notice_type)}")
    click.echo(json.dumps(doc))


@click.group(name="keys")
def keys() -> None:
    """The tool's RSA key pair (signs token assertions; public half at /.well-known/jwks.json)."""


@keys.command(name="generate")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help=f"Private key PEM to create (default: $LTI_PRIVATE_KEY_FILE or {DEFAULT_KEY_FILE}).")
@click.option("--kid", default=None, help="Key id (default: $LTI_TOOL_KEY_ID or the RFC 7638 thumbprint).")
def generate(out: Path | None, kid: str | None) -> None:
    """Create an RSA 2048 key (0600, never overwritten) and print its public JWK for the developer key."""
    from canvas_stream.keys import KeyFileError, generate_private_key, public_jwk

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
