"""Pre-signed events: a realistic mix from the corpus, each a distinct event, RS256-signed once.

Every variant gets a fresh ``metadata.request_id`` (Canvas format: the event id is a hash of
metadata and body) or fresh ``data[].id`` (Caliper), and its Canvas ids shifted by a per-variant
offset taken modulo ``ENTITY_POOL`` (so entity rows repeat across a run, as courses and users do,
but rarely within one batch). Signing costs ~0.25 ms per event, so pools are cached on disk
(``~/.cache/canvas-stream-bench``) with the key that signed them; tokens are valid for 30 days.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import multiprocessing
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CORPUS = Path(os.environ.get("CANVAS_CORPUS",
                           Path(__file__).resolve().parents[1] / "tests" / "data" / "canvas-lms-events"))
CACHE = Path(os.environ.get("CANVAS_BENCH_CACHE", Path.home() / ".cache" / "canvas-stream-bench"))
ISSUER = "https://live-events.canvas.instructure.com"
KID = "bench-2048"
ENTITY_POOL = 5000
POOL_VERSION = 2
_URN = re.compile(r"^(urn:instructure:canvas:[A-Za-z_]+:)(\d+)$")


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def load_examples() -> list[tuple[str, str, dict[str, Any]]]:
    """(format, doc name, payload) for every event example in the corpus (metadata pages left out)."""
    import csv

    out = []
    with (CORPUS / "INDEX.tsv").open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["kind"] != "event":
                continue
            doc = json.loads((CORPUS / row["file"]).read_text())
            for ex in doc.get("examples") or []:
                out.append((row["format"], row["event_name"], ex["payload"]))
    return out


def _shift(value: Any, offset: int) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + offset
    if isinstance(value, str):
        if value.isdigit() and len(value) >= 2:
            return str(int(value) + offset)
        m = _URN.match(value)
        if m:
            return m.group(1) + str(int(m.group(2)) + offset)
    return value


def shift_ids(node: Any, offset: int) -> Any:
    """Shift every Canvas id (``id``/``*_id`` keys with numeric values, canvas urns) by ``offset``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                out[key] = shift_ids(value, offset)
            elif key == "id" or key.endswith("_id") or (isinstance(value, str) and value.startswith("urn:instr")):
                out[key] = _shift(value, offset)
            else:
                out[key] = value
        return out
    if isinstance(node, list):
        return [shift_ids(v, offset) for v in node]
    return node


def make_variant(fmt: str, payload: dict[str, Any], k: int, rng: random.Random) -> tuple[dict[str, Any], str]:
    """A distinct copy of an example and its event id (as the normalizers compute it)."""
    p = shift_ids(copy.deepcopy(payload), (k % ENTITY_POOL) * 7919)
    if fmt == "canvas":
        p.setdefault("metadata", {})["request_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        from processors.normalize.canvas import canvas_event_id

        return p, canvas_event_id(p)
    first = None
    for item in p.get("data") or []:
        item["id"] = "urn:uuid:" + str(uuid.UUID(int=rng.getrandbits(128), version=4))
        first = first or item["id"]
    return p, first or ""


_KEY: rsa.RSAPrivateKey | None = None
_HEADER = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": KID}, separators=(",", ":")).encode())


def _init_signer(pem: bytes) -> None:
    global _KEY
    _KEY = serialization.load_pem_private_key(pem, password=None)  # type: ignore[assignment]


def _sign(claims_json: bytes) -> bytes:
    assert _KEY is not None
    signing_input = _HEADER + b"." + b64url(claims_json)
    sig = _KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input + b"." + b64url(sig)


@dataclass
class Pool:
    tokens_path: Path  # one compact JWS per line (what wrk reads)
    tokens: list[bytes]
    event_ids: list[str]
    names: list[str]
    key: rsa.RSAPrivateKey

    def __len__(self) -> int:
        return len(self.tokens)

    def jwk(self) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
        return jwk

    def claims_json(self, i: int) -> bytes:
        """The signed payload's JSON text (what the ingress publishes)."""
        return base64.urlsafe_b64decode(self.tokens[i].split(b".")[1] + b"===")

    def claims(self, i: int) -> dict[str, Any]:
        return json.loads(self.claims_json(i))


def _fingerprint(n: int, seed: int) -> str:
    h = hashlib.sha256(f"{POOL_VERSION}|{n}|{seed}".encode())
    for path in sorted(CORPUS.glob("*/*.json")):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def build_pool(n: int, seed: int = 7, log=print) -> Pool:
    """``n`` distinct signed events (cached); a uniform mix over the corpus's event examples."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"pool-{n}-{_fingerprint(n, seed)}"
    tokens_path, meta_path, key_path = stem.with_suffix(".jws"), stem.with_suffix(".meta"), stem.with_suffix(".pem")
    if tokens_path.exists() and meta_path.exists() and key_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("expires", 0) > time.time() + 86400:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            tokens = tokens_path.read_bytes().split(b"\n")[:n]
            log(f"pool: {n} signed events from cache {tokens_path}")
            return Pool(tokens_path, tokens, meta["ids"], meta["names"], key)  # type: ignore[arg-type]
    started = time.perf_counter()
    examples = load_examples()
    rng = random.Random(seed)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    now = int(time.time())
    bodies, ids, names = [], [], []
    for k in range(n):
        fmt, name, payload = examples[rng.randrange(len(examples))]
        variant, event_id = make_variant(fmt, payload, k, rng)
        claims = {"iss": ISSUER, "iat": now, "exp": now + 30 * 86400, **variant}
        bodies.append(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
        ids.append(event_id)
        names.append(f"{fmt}:{name}")
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2, _init_signer, (pem,)) as workers:
        tokens = workers.map(_sign, bodies, chunksize=500)
    tmp = tokens_path.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(tokens) + b"\n")
    tmp.rename(tokens_path)
    key_path.write_bytes(pem)
    meta_path.write_text(json.dumps({"ids": ids, "names": names, "expires": now + 30 * 86400}))
    log(f"pool: signed {n} distinct events in {time.perf_counter() - started:.1f}s -> {tokens_path}")
    return Pool(tokens_path, tokens, ids, names, key)
