"""LTI PNS notices as Canvas builds them, signed with the test keys (for unit and integration tests).

Claims follow protocols.md B.6/B.7 (Canvas's builders): HelloWorld and ContextCopy carry no sub,
roles or message_type; the asset-processor notice carries assets with base64 SHA-256 checksums.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import time
import uuid

from tests.support.jwt_helpers import rsa_key, sign

ISSUER = "https://canvas.instructure.com"
CLIENT_ID = "10000000000068"
DEPLOYMENT = "106:8865aa05b4b79b64a91a86042e43af5ea8ae79eb"
KID = "2025-02-01T01:16:43Z_3018685d-05b7-43cb-b865-027eec352714"
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
COURSE = "http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


BODIES = {
    "LtiHelloWorldNotice": {
        CLAIM + "context": {"id": "8865aa05b4b79b64a91a86042e43af5ea8ae79eb", "title": "Fake Academy",
                            "type": ["Account"]},
        "https://www.instructure.com/hello_world": {
            "title": "Hello World!",
            "message": "Congratulations! You have successfully subscribed to LtiHelloWorldNotice in Canvas."},
    },
    "LtiContextCopyNotice": {
        CLAIM + "context": {"id": "4dde05e8ca1973bcca9bffc13e1548820eee93a3", "label": "BIO-2", "title": "Biology 2",
                            "type": [COURSE]},
        CLAIM + "origin_contexts": ["5098686ffc86cae4e0784b533a18af229ff5074e"],
    },
    "LtiAssetProcessorSubmissionNotice": {
        "sub": "535fa085f22b4655f48cd5a36a9215f64c062838",
        CLAIM + "context": {"id": "4dde05e8ca1973bcca9bffc13e1548820eee93a3", "label": "BIO-2", "title": "Biology 2",
                            "type": [COURSE]},
        CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/system/person#User"],
        CLAIM + "custom": {"canvas_course_id": "1"},
        CLAIM + "for_user": {"user_id": "972fd8aa-7f57-4d11-9400-916a0ed0d31d"},
        CLAIM + "activity": {"id": "d79c2ded-b078-4e8e-b090-dd1d380fc596"},
        CLAIM + "submission": {"id": "d6446aaf-3f71-4eea-b2fd-20bd8d151506:1"},
        CLAIM + "assetreport": {"scope": ["https://purl.imsglobal.org/spec/lti/scope/report"],
                                "report_url": "https://canvas.example/api/lti/asset_processors/83/reports"},
        CLAIM + "assetservice": {
            "scope": ["https://purl.imsglobal.org/spec/lti/scope/asset.readonly"],
            "assets": [{"asset_id": "dd33081e-81ba-4651-b528-098315f8a346",
                        "url": "https://canvas.example/api/lti/asset_processors/83/assets/dd33081e",
                        "sha256_checksum": b64sha256(b"<p>essay v1</p>"),
                        "timestamp": "2025-07-30T03:26:44-06:00", "size": 15, "content_type": "text/html",
                        "title": "AnonymousGraded"}],
        },
        CLAIM + "eulaservice": {"url": "https://canvas.example/api/lti/asset_processor_eulas/132",
                                "scope": ["https://purl.imsglobal.org/spec/lti/scope/eula/user"]},
    },
}


def notice(ntype: str, *, notice_id: str | None = None, timestamp: str = "2025-03-19T11:24:25Z",
           deployment: str = DEPLOYMENT, iat: int | None = None, **overrides) -> dict:
    """Claims as Canvas's PnsNotice builds them (aud = azp = client id, exp = iat + 1 h)."""
    now = int(time.time()) if iat is None else iat
    claims = {
        CLAIM + "version": "1.3.0",
        CLAIM + "notice": {"id": notice_id or str(uuid.uuid4()), "timestamp": timestamp, "type": ntype},
        "aud": CLIENT_ID, "azp": CLIENT_ID,
        CLAIM + "deployment_id": deployment,
        "iat": now, "exp": now + 3600, "iss": ISSUER, "nonce": str(uuid.uuid4()),
        **copy.deepcopy(BODIES.get(ntype, {})),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def jwt_of(claims: dict, key_name: str = "lti-current", kid: str = KID) -> str:
    return sign(claims, rsa_key(key_name), kid, headers={"typ": "JWT"})


def nid(claims: dict) -> str:
    return claims[CLAIM + "notice"]["id"]


def batch(*tokens: str) -> str:
    return json.dumps({"notices": [{"jwt": t} for t in tokens]})
