"""The local test signing key of ``canvas-stream dev`` and the key set that trusts it, in dev only.

Why: Canvas signs every live event, so a first-time user cannot see a row without a Canvas
subscription. ``dev`` keeps an RSA key in its data directory, and points its ingress (through
``LIVE_EVENTS_JWKS_URL``) at a key set served on 127.0.0.1 that holds the test key *and* the keys of
the configured JWKS (Canvas's by default), fetched in the background: events signed by
``canvas-stream send`` and by Canvas are both accepted. A production ingress never sees this key set,
so it refuses events signed with the test key (unknown ``kid``, 401).
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from canvas_stream.keys import generate_private_key, load_private_key, public_jwk, thumbprint

DEV_KEY_FILE = "dev-signing-key.pem"
KID_PREFIX = "canvas-stream-dev-"
MAX_UPSTREAM_KEYS = 19  # the ingress accepts at most 20 keys in a set; one is ours
MAX_UPSTREAM_BYTES = 128 * 1024


def dev_key_path(data_dir: Path) -> Path:
    return data_dir / DEV_KEY_FILE


def ensure_dev_key(data_dir: Path) -> rsa.RSAPrivateKey:
    """The data directory's test key, created (0600) on first use and kept across runs."""
    path = dev_key_path(data_dir)
    if path.exists():
        return load_private_key(path)
    return generate_private_key(path)


def dev_kid(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """A kid that says what the key is and cannot collide with Canvas's."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return KID_PREFIX + thumbprint(public)[:16]


def dev_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return public_jwk(key, dev_kid(key))


def usable_upstream_keys(document: Any, own_kid: str) -> list[dict[str, Any]]:
    """The JWKs of an upstream key set worth passing on (the ingress checks each one strictly)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return []
    keys = [k for k in document["keys"] if isinstance(k, dict) and k.get("kid") != own_kid]
    return keys[:MAX_UPSTREAM_KEYS]


class DevJwks:
    """``GET /jwks`` on 127.0.0.1: the test key plus the upstream key set's keys (never blocks on upstream).

    The upstream set is fetched in a background thread, every ``refresh_seconds`` (sooner after a
    failure); while it cannot be fetched (no network), only the test key is served.
    """

    def __init__(self, key: rsa.RSAPrivateKey, upstream_url: str | None, *, refresh_seconds: float = 300.0,
                 retry_seconds: float = 30.0, timeout: float = 5.0) -> None:
        self.own = dev_jwk(key)
        self.upstream_url = upstream_url
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self.timeout = timeout
        self.upstream_keys: list[dict[str, Any]] = []
        self.upstream_error: str | None = None
        self._fetched = threading.Event()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        assert self._server is not None, "DevJwks is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/jwks"

    def document(self) -> dict[str, Any]:
        return {"keys": [self.own, *self.upstream_keys]}

    def fetch_upstream(self) -> None:
        """One fetch of the upstream key set; keeps the previous keys when it fails."""
        if not self.upstream_url:
            return
        try:
            request = urllib.request.Request(self.upstream_url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                document = json.loads(response.read(MAX_UPSTREAM_BYTES + 1)[:MAX_UPSTREAM_BYTES])
            self.upstream_keys = usable_upstream_keys(document, self.own["kid"])
            self.upstream_error = None
        except Exception as exc:  # no network in dev is normal: serve the test key alone
            self.upstream_error = f"{type(exc).__name__}: {str(exc)[:120]}"
        finally:
            self._fetched.set()

    def wait_first_fetch(self, timeout: float) -> bool:
        return self._fetched.wait(timeout)

    def _refresh_forever(self) -> None:
        while not self._stop.is_set():
            self.fetch_upstream()
            self._stop.wait(self.retry_seconds if self.upstream_error else self.refresh_seconds)

    def start(self) -> DevJwks:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/jwks":
                    self.send_error(404)
                    return
                body = json.dumps(owner.document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=60")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the dev console is for the user
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="dev-jwks", daemon=True),
            threading.Thread(target=self._refresh_forever, name="dev-jwks-upstream", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            with contextlib.suppress(RuntimeError):
                thread.join(timeout=self.timeout + 1)

    def __enter__(self) -> DevJwks:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
