"""All configuration, read from the environment once, in one place (pydantic-settings)."""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CANVAS_LIVE_EVENTS_JWKS_URL = "https://8axpcl50e4.execute-api.us-east-1.amazonaws.com/main/jwks"
CANVAS_LIVE_EVENTS_ISSUER = "https://live-events.canvas.instructure.com"
CANVAS_LTI_JWKS_URL = "https://sso.canvaslms.com/api/lti/security/jwks"
CANVAS_LTI_ISSUER = "https://canvas.instructure.com"
CANVAS_LTI_TOKEN_URL = "https://sso.canvaslms.com/login/oauth2/token"

# Not `canvas`: Canvas Data 2's client (`dap initdb`) creates its tables there, with the same names.
DEFAULT_WAREHOUSE_SCHEMA = "canvas_stream"
DEFAULT_ANALYST_ROLE = "canvas_stream_analyst"
# A PostgreSQL identifier that needs no quoting: the schema and role names are put into SQL text.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Canvas global ids are shard * 10^13 + local id, and a bigint: shard ids stay below 922337.
MAX_SHARD = 922336


def async_database_url(url: str) -> str:
    """Accept ``postgresql://`` (what psql and most tools use) and select the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def plain_database_url(url: str) -> str:
    """The same URL for psql and analysts' tools."""
    return async_database_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


class Settings(BaseSettings):
    """Every knob, with the environment variable of the same name (upper case)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: SecretStr | None = Field(default=None, description="PostgreSQL URL (postgresql://...).")
    kafka_bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port].")
    kafka_topic: str = Field(default="canvas-stream.deliveries", description="Topic of verified deliveries.")
    kafka_partitions: int = Field(default=6, ge=1, description="Partitions when the topic is created.")
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_ack_timeout_seconds: float = Field(default=5.0, gt=0, description="Ingress wait for broker acks.")

    host: str = Field(default="0.0.0.0", description="Ingress bind address.")
    port: int = Field(default=8080, description="Ingress port.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest request body (413 above).")

    live_events_jwks_url: str = CANVAS_LIVE_EVENTS_JWKS_URL
    live_events_issuer: str = CANVAS_LIVE_EVENTS_ISSUER
    live_events_allow_unsigned: bool = Field(default=False, description="Accept plain JSON bodies.")
    live_events_leeway_seconds: int = Field(default=1800, ge=0, description="exp leeway (retries span 20 min).")
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)

    lti_platform_jwks_url: str = CANVAS_LTI_JWKS_URL
    lti_platform_issuer: str = CANVAS_LTI_ISSUER
    lti_client_id: str | None = None
    lti_deployment_ids: str | None = Field(default=None, description="Comma-separated allow-list.")
    lti_leeway_seconds: int = Field(default=60, ge=0)
    lti_token_url: str = CANVAS_LTI_TOKEN_URL
    lti_private_key_file: str | None = None
    lti_pns_url: str | None = None
    lti_tool_key_id: str | None = None

    worker_batch_size: int = Field(default=1000, ge=1, description="Most events per database transaction.")
    worker_batch_seconds: float = Field(default=0.2, gt=0, description="Longest wait to fill a batch.")
    worker_group_id: str = Field(default="canvas-stream-worker", description="Kafka consumer group.")
    worker_session_timeout_seconds: float = Field(
        default=20.0, ge=6, description="Consumer-group session timeout: how fast a dead worker's partitions move."
    )
    worker_stall_seconds: float = Field(
        default=120.0, gt=0, description="Not ready when there is lag and no commit for this long."
    )
    worker_status_port: int | None = Field(default=None, description="Worker /healthz /readyz port.")

    spool_dir: str | None = Field(default=None, description="Local spool for broker outages.")
    spool_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    http_read_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Ingress: close a connection whose request (headers or body) is slower.")

    warehouse_schema: str = Field(
        default=DEFAULT_WAREHOUSE_SCHEMA, description="PostgreSQL schema of every warehouse table, view and function.")
    canvas_home_shard: int | None = Field(
        default=None, ge=1, le=MAX_SHARD,
        description="Shard of the institution's Canvas: its objects' ids are stored in local form (as CD2 does).")
    analyst_role: str = Field(
        default=DEFAULT_ANALYST_ROLE, description="Read-only group role the migrations create for analysts.")

    log_level: str = "INFO"
    log_format: str = Field(default="console", description="console or json.")

    @field_validator("warehouse_schema", "analyst_role")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a lower-case PostgreSQL identifier (a-z, 0-9, _; at most 63 characters)")
        return value

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise SystemExit("DATABASE_URL is not set")
        return async_database_url(self.database_url.get_secret_value())

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set")
        return self.kafka_bootstrap_servers

    def deployment_ids(self) -> frozenset[str]:
        return frozenset(x.strip() for x in (self.lti_deployment_ids or "").split(",") if x.strip())

    def masked(self) -> dict[str, object]:
        """Settings to print at start; secrets and passwords in URLs are masked."""
        shown: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                shown[name] = mask_url(value.get_secret_value())
            else:
                shown[name] = value
        return shown


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
