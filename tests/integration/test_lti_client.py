"""The tool side of PNS against a local stand-in for Canvas's token and notice-handler endpoints.

The stand-in checks the client assertion the way Canvas does (protocols.md D) with the public JWK
that ``canvas-stream keys generate`` printed, and validates PUTs like Canvas's NoticeHandler model
(protocols.md B.3/B.4), answering errors as ``{"errors": {"message", "type"}}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import jwt
import pytest
from aiohttp import web

from canvas_stream.keys import load_private_key
from canvas_stream.lti_client import PNS_SCOPE, LtiServiceClient

CLIENT_ID = "10000000000068"
TOOL_HOST = "tool.example"
NOTICE_TYPES = ["LtiHelloWorldNotice", "LtiAssetProcessorSubmissionNotice", "LtiContextCopyNotice",
                "LtiAssetProcessorContributionNotice"]
DEPLOYMENT = "106:8865aa05b4b79b64a91a86042e43af5ea8ae79eb"


class Platform:
    """Token endpoint + notice-handlers endpoint for one deployment (tool 106)."""

    def __init__(self, tool_jwk: dict) -> None:
        self.tool_jwk = tool_jwk
        self.handlers: dict[str, dict] = {}
        self.tokens: set[str] = set()
        self.jtis: set[str] = set()
        self.token_requests = 0
        self.problems: list[str] = []
        self.base = ""
        self.deployment = DEPLOYMENT

    @property
    def token_url(self) -> str:
        return f"{self.base}/login/oauth2/token"

    @property
    def pns_url(self) -> str:
        return f"{self.base}/api/lti/notice-handlers/106"

    def _refuse(self, why: str) -> web.Response:
        self.problems.append(why)
        return web.json_response({"error": "invalid_request", "error_description": why}, status=400)

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return self._refuse("grant_type must be client_credentials")
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return self._refuse("bad client_assertion_type")
        if form.get("scope") != PNS_SCOPE:
            return self._refuse(f"unexpected scope {form.get('scope')!r}")
        assertion = str(form.get("client_assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, jwt.PyJWK(self.tool_jwk).key, algorithms=["RS256"],
                                audience=self.token_url, issuer=CLIENT_ID,
                                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]})
        except jwt.InvalidSignatureError:
            return self._refuse("JWS signature invalid.")
        except jwt.PyJWTError as exc:
            return self._refuse(f"assertion rejected: {exc}")
        if header.get("kid") != self.tool_jwk["kid"]:
            return self._refuse("kid does not match the developer key's JWK")
        if claims["sub"] != CLIENT_ID:
            return self._refuse("sub must be the client id")
        if not (0 < claims["exp"] - claims["iat"] <= 300) or abs(claims["iat"] - time.time()) > 30:
            return self._refuse("iat/exp out of range")
        if claims["jti"] in self.jtis:
            return self._refuse("jti reused")
        self.jtis.add(claims["jti"])
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600,
                                  "scope": PNS_SCOPE})

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    @staticmethod
    def _bad(message: str) -> web.Response:
        return web.json_response({"errors": {"message": message, "type": "bad_request"}}, status=400)

    async def notice_handlers(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"errors": [{"message": "Invalid access token format"}]}, status=401)
        if request.method == "GET":
            return web.json_response({
                "client_id": int(CLIENT_ID), "deployment_id": self.deployment,
                "notice_handlers": [self.handlers.get(t, {"notice_type": t, "handler": ""}) for t in NOTICE_TYPES],
            })
        body = await request.json()
        ntype, handler, size = body.get("notice_type"), body.get("handler"), body.get("max_batch_size")
        if not isinstance(handler, str):
            return self._bad("handler must be a valid URL or an empty string")
        if ntype not in NOTICE_TYPES:
            return self._bad(f"Validation failed: Notice type unknown, must be one of {NOTICE_TYPES}")
        if handler == "":
            self.handlers.pop(ntype, None)
            return web.json_response({"notice_type": ntype, "handler": ""})
        url = urlparse(handler)
        if url.scheme not in ("http", "https") or not url.hostname:
            return self._bad("handler must be a valid URL or an empty string")
        if url.hostname != TOOL_HOST:
            return self._bad("Validation failed: Url should match tool's domain or redirect uri")
        if size is not None and (not isinstance(size, int) or size < 10):
            return self._bad("Validation failed: Max batch size must be greater than or equal to 10")
        entry = {"notice_type": ntype, "handler": handler, **({"max_batch_size": size} if size else {})}
        self.handlers[ntype] = entry
        return web.json_response(entry)


@pytest.fixture
async def tool_key(tmp_path):
    """``canvas-stream keys generate`` output: the key file and the public JWK it printed."""
    path = tmp_path / "keys" / "tool.pem"
    rc, out, err = await cli("keys", "generate", "--out", str(path))
    assert rc == 0, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    jwk = json.loads(out)
    assert {"kty", "kid", "alg", "use", "n", "e"} <= set(jwk) and "d" not in jwk
    return path, jwk


@pytest.fixture
async def platform(tool_key):
    stand_in = Platform(tool_key[1])
    app = web.Application()
    app.router.add_post("/login/oauth2/token", stand_in.token)
    app.router.add_route("GET", "/api/lti/notice-handlers/106", stand_in.notice_handlers)
    app.router.add_route("PUT", "/api/lti/notice-handlers/106", stand_in.notice_handlers)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    stand_in.base = f"http://{host}:{port}"
    yield stand_in
    await runner.cleanup()


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the real ``canvas-stream`` CLI in a subprocess (the stand-in keeps serving meanwhile)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LTI_") and k != "DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "canvas_stream.cli", *args, env={**base, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


def lti_env(platform: Platform, key_file: Path) -> dict[str, str]:
    return {"LTI_CLIENT_ID": CLIENT_ID, "LTI_PRIVATE_KEY_FILE": str(key_file),
            "LTI_TOKEN_URL": platform.token_url, "LTI_PNS_URL": platform.pns_url}


async def test_register_list_and_remove_handlers(platform, tool_key):
    env = lti_env(platform, tool_key[0])
    handler = f"https://{TOOL_HOST}/lti/notices/{DEPLOYMENT}"
    rc, out, err = await cli("notice-handlers", "set", "--notice-type", "LtiContextCopyNotice",
                             "--handler", handler, "--max-batch-size", "20", env=env)
    assert rc == 0, err
    assert f"subscribed LtiContextCopyNotice -> {handler}" in out
    assert platform.problems == [] and platform.token_requests == 1
    assert platform.handlers["LtiContextCopyNotice"] == {"notice_type": "LtiContextCopyNotice", "handler": handler,
                                                         "max_batch_size": 20}

    rc, out, err = await cli("notice-handlers", "list", env=env)
    assert rc == 0, err
    assert f"deployment_id: {DEPLOYMENT}" in out
    assert out.splitlines()[-1] == "hello world: not checked (DATABASE_URL not set)"
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:-1]}
    assert lines == {"LtiHelloWorldNotice": "(none)", "LtiAssetProcessorSubmissionNotice": "(none)",
                     "LtiContextCopyNotice": handler, "LtiAssetProcessorContributionNotice": "(none)"}

    rc, out, err = await cli("notice-handlers", "list", "--json", env=env)
    assert rc == 0 and json.loads(out)["client_id"] == int(CLIENT_ID)

    rc, out, err = await cli("notice-handlers", "set", "--notice-type", "LtiContextCopyNotice", "--handler", "",
                             env=env)
    assert rc == 0 and "unsubscribed LtiContextCopyNotice" in out, err
    assert platform.handlers == {} and platform.problems == []
    assert len(platform.jtis) == platform.token_requests == 4  # one fresh assertion per run, jti never reused

    # keys generate never overwrites a key the platform already trusts
    rc, out, err = await cli("keys", "generate", "--out", str(tool_key[0]))
    assert rc == 1 and "already exists" in err


async def test_platform_errors_are_shown_without_the_token(platform, tool_key):
    env = lti_env(platform, tool_key[0])
    cases = [
        (["--notice-type", "LtiContextCopyNotice", "--handler", "https://elsewhere.example/hook"],
         "Url should match tool's domain or redirect uri"),
        (["--notice-type", "LtiContextCopyNotice", "--handler", f"https://{TOOL_HOST}/x", "--max-batch-size", "5"],
         "Max batch size must be greater than or equal to 10"),
        (["--notice-type", "LtiNoSuchNotice", "--handler", ""], "Notice type unknown"),
    ]
    for args, message in cases:
        rc, out, err = await cli("notice-handlers", "set", *args, env=env)
        assert rc == 1, (args, out)
        assert "HTTP 400" in err and message in err, err
        assert not any(token in out + err for token in platform.tokens)
    assert platform.handlers == {}

    # A key the developer key does not hold: Canvas answers "JWS signature invalid."
    other = tool_key[0].parent / "other.pem"
    rc, _, err = await cli("keys", "generate", "--out", str(other))
    assert rc == 0
    rc, out, err = await cli("notice-handlers", "list", env={**env, "LTI_PRIVATE_KEY_FILE": str(other)})
    assert rc == 1 and "token request refused: HTTP 400: JWS signature invalid." in err, err

    rc, out, err = await cli("notice-handlers", "list", env={"LTI_TOKEN_URL": platform.token_url})
    assert rc == 2 and "LTI_CLIENT_ID" in err and "LTI_PRIVATE_KEY_FILE" in err and "LTI_PNS_URL" in err


async def test_token_is_cached_and_refreshed_once_on_401(platform, tool_key):
    key = load_private_key(tool_key[0])
    async with LtiServiceClient(client_id=CLIENT_ID, token_url=platform.token_url, private_key=key) as client:
        first = await client.list_notice_handlers(platform.pns_url)
        await client.set_notice_handler(platform.pns_url, "LtiHelloWorldNotice", f"https://{TOOL_HOST}/lti/notices")
        assert first["deployment_id"] == DEPLOYMENT
        assert platform.token_requests == 1  # cached until expires_in - 60 s

        platform.tokens.clear()  # the platform revoked it early
        doc = await client.list_notice_handlers(platform.pns_url)
        assert doc["notice_handlers"][0]["handler"] == f"https://{TOOL_HOST}/lti/notices"
        assert platform.token_requests == 2 and platform.problems == []
