"""HTTPS in front: Debian's ``caddy`` with the shipped ``deploy/Caddyfile`` (its internal CA, no trust-store
install, admin endpoint off, free ports on 127.0.0.1) in front of a real ingress: a signed event posted
over HTTPS is accepted, and only the public routes get through (``/metrics`` and the rest are 404)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector
from yarl import URL

from canvas_stream.embedded.process import free_port
from ingest.publish import ensure_topic
from tests.support.events import example, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import Role, role_env, running, wait_until

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "deploy" / "Caddyfile"
CADDY = shutil.which("caddy")

if CADDY is None and os.environ.get("CI") == "true":
    pytest.fail("caddy is not installed (.ci/run installs Debian's caddy package)", pytrace=False)
pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy not installed (apt-get install caddy)")


@dataclass
class Front:
    https: str  # https://localhost:<port>
    http: str  # Caddy's plain-HTTP port (redirects)
    ingress: str  # the ingress itself, behind Caddy
    ssl: ssl.SSLContext


@contextlib.contextmanager
def caddy_in_front_of(upstream: str, home: Path, https_port: int, http_port: int):
    """Run ``caddy run`` on the shipped Caddyfile with test-only global options; always stop it."""
    assert CADDY is not None
    config = home / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n\tskip_install_trust\n\tdefault_bind 127.0.0.1\n"
        f"\thttp_port {http_port}\n\thttps_port {https_port}\n}}\n"
        f"import {CADDYFILE}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CADDY"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               PUBLIC_HOSTNAME="localhost", CADDY_TLS="internal", INGRESS_UPSTREAM=upstream)
    log = (home / "caddy.log").open("wb")
    proc = subprocess.Popen([CADDY, "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture
async def front(kafka_bootstrap, unique_topic, server_dir) -> AsyncIterator[Front]:
    topic = f"{unique_topic}https"
    await ensure_topic(kafka_bootstrap, topic, 1)
    port, https_port, http_port = free_port(), free_port(), free_port()
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:
        ingress = Role("ingress", role_env(LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true",
                KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic, HOST="127.0.0.1",
                                           PORT=str(port), LIVE_EVENTS_JWKS_URL=jwks.url))
        with running(ingress), caddy_in_front_of(f"127.0.0.1:{port}", server_dir, https_port, http_port) as (
                caddy, root_cert):
            async with ClientSession() as http:
                async def ingress_ready() -> bool:
                    with contextlib.suppress(Exception):
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            return response.status == 200
                    return False

                await wait_until(ingress_ready, timeout=60, message=f"ingress ready\n{ingress.output()}")
            await wait_until(lambda: _exists(root_cert, caddy), timeout=30,
                             message=f"caddy's root certificate\n{(server_dir / 'caddy.log').read_text()}")
            context = ssl.create_default_context(cafile=str(root_cert))
            front = Front(f"https://localhost:{https_port}", f"http://127.0.0.1:{http_port}",
                          f"http://127.0.0.1:{port}", context)

            async def serving() -> bool:
                with contextlib.suppress(Exception):
                    async with ClientSession(connector=TCPConnector(ssl=context)) as http, \
                            http.get(f"{front.https}/.well-known/jwks.json") as response:
                        return response.status == 200
                return False

            await wait_until(serving, timeout=30, message=f"caddy serving\n{(server_dir / 'caddy.log').read_text()}")
            yield front


async def _exists(path: Path, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "caddy exited"
    return path.exists()


async def test_a_signed_event_over_https_is_accepted_and_only_public_routes_pass(front: Front):
    async with ClientSession(connector=TCPConnector(ssl=front.ssl)) as https:
        event = example("canvas", "course_created")
        async with https.post(f"{front.https}/live-events", data=signed(event)) as response:
            assert response.status == 200, await response.text()
            assert (await response.json()) == {"status": "accepted", "format": "canvas"}
            assert response.url.scheme == "https"

        async with https.get(f"{front.https}/.well-known/jwks.json") as response:
            assert response.status == 200 and "keys" in await response.json()

        # An LTI notice route reaches the ingress (its JSON answer, not Caddy's 404).
        async with https.post(f"{front.https}/lti/notices/deployment-1", data="not a jwt") as response:
            assert response.headers["Content-Type"].startswith("application/json"), response.headers
            assert "error" in json.loads(await response.text())

        # Everything else stops at Caddy, although the ingress serves it.
        async with ClientSession() as direct, direct.get(f"{front.ingress}/readyz") as response:
            assert response.status == 200 and "broker" in await response.text()
        for path in ("/metrics", "/readyz", "/healthz", "/", "/live-events/x", "/lti/notices/a/b",
                     "/live-events/../metrics", "/lti/notices/..%2F..%2Fmetrics", "//metrics"):
            async with https.get(URL(f"{front.https}{path}", encoded=True)) as response:
                body = await response.text()
                assert response.status == 404, (path, response.status, body[:200])
                assert "canvas_stream_" not in body and "broker" not in body, path

    async with ClientSession() as plain, plain.get(f"{front.http}/live-events", allow_redirects=False) as response:
        assert response.status in (301, 308) and response.headers["Location"].startswith("https://"), response.status


def test_the_caddyfile_forwards_exactly_the_public_routes():
    text = CADDYFILE.read_text()
    assert "tls {$CADDY_TLS}" in text and "{$PUBLIC_HOSTNAME} {" in text
    assert r"@public path_regexp ^/(live-events|lti/notices(/[^/.][^/]*)?|\.well-known/jwks\.json)$" in text
    assert "respond 404" in text and "admin off" not in text  # test-only options stay in the test


async def test_caddy_is_stopped_by_the_helper(tmp_path):
    """The helper leaves no caddy process behind."""
    (tmp_path / "home").mkdir()
    with caddy_in_front_of("127.0.0.1:9", tmp_path / "home", free_port(), free_port()) as (proc, _):
        await asyncio.sleep(0.5)
        pid = proc.pid
    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
