"""All configuration, read from the environment once, in one place (pydantic-settings)."""

from __future__ import annotations

import os
import re
from functools import lru_cache

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from canvas_stream.errors import CanvasStreamError

CANVAS_LIVE_EVENTS_JWKS_URL = "https://8axpcl50e4.execute-api.us-east-1.amazonaws.com/main/jwks"
CANVAS_LIVE_EVENTS_ISSUER = "https://live-events.canvas.instructure.com"
CANVAS_LTI_JWKS_URL = "https://sso.canvaslms.com/api/lti/security/jwks"
CANVAS_LTI_ISSUER = "https://canvas.instructure.com"
CANVAS_LTI_TOKEN_URL = "https://sso.canvaslms.com/login/oauth2/token"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("console", "json")


def _one_of(value: str, choices: tuple[str, ...], what: str) -> str:
    """The choice ``value`` names, in any case and with spaces around it; ValueError listing the choices."""
    by_name = {choice.lower(): choice for choice in choices}
    try:
        return by_name[value.strip().lower()]
    except KeyError:
        raise ValueError(f"not a {what}: use {', '.join(choices[:-1])} or {choices[-1]}") from None


class SettingError(CanvasStreamError):
    """A setting that is missing or does not work (e.g. a database that cannot be reached): the CLI
    prints one line naming it and exits with status 2."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def _with_driver(url: str, drivername: str) -> str:
    """A PostgreSQL URL (any ``postgres``/``postgresql[+driver]`` scheme) with ``drivername``;
    any other text unchanged. SQLAlchemy's URL parser does the work, passwords stay as given."""
    # Imported here: sqlalchemy costs ~0.4 s to import (python -X importtime) and most commands
    # that read settings never touch a database.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        return url
    return parsed.set(drivername=drivername).render_as_string(hide_password=False)

# Not `canvas`: Canvas Data 2's client (`dap initdb`) creates its tables there, with the same names.
DEFAULT_WAREHOUSE_SCHEMA = "canvas_stream"
DEFAULT_ANALYST_ROLE = "canvas_stream_analyst"
# A PostgreSQL identifier that needs no quoting: the schema and role names are put into SQL text.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Secrets that are not URLs: shown as *** (a URL is shown with its password masked).
SECRET_KEYS = frozenset({"pseudonymization_key"})
# Canvas global ids are shard * 10^13 + local id, and a bigint: shard ids stay below 922337.
MAX_SHARD = 922336


def async_database_url(url: str) -> str:
    """Accept ``postgresql://`` (what psql and most tools use) and select the asyncpg driver."""
    return _with_driver(url, "postgresql+asyncpg")


def plain_database_url(url: str) -> str:
    """The same URL for psql, analysts' tools and ``asyncpg.connect``."""
    return _with_driver(url, "postgresql")


class Settings(BaseSettings):
    """Every knob, with the environment variable of the same name (upper case)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: SecretStr | None = Field(default=None, description="PostgreSQL URL (postgresql://...).")
    kafka_bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port].")
    kafka_topic: str = Field(default="canvas-stream.deliveries", description="Topic of verified deliveries.")
    kafka_partitions: int = Field(default=6, ge=1, description="Partitions when the topic is created.")
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_ack_timeout_seconds: float = Field(default=5.0, gt=0, description="Ingress wait for broker acks.")
    kafka_max_record_bytes: int = Field(
        default=1_000_000, ge=16 * 1024, le=4 * 1024 * 1024,
        description="Largest record the ingress publishes (413 above); at most the topic's max.message.bytes "
                    "(Kafka's default 1,048,588), so every broker refuses the same records (tansu has no limit).")

    host: str = Field(default="0.0.0.0", description="Ingress bind address.")
    port: int = Field(default=8080, description="Ingress port.")
    admin_port: int = Field(
        default=9090, description="Ingress admin port (bound to HOST): /status, /metrics, /healthz, /readyz.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest request body (413 above).")

    live_events_jwks_url: str = CANVAS_LIVE_EVENTS_JWKS_URL
    live_events_issuer: str = CANVAS_LIVE_EVENTS_ISSUER
    live_events_allow_unsigned: bool = Field(default=False, description="Accept plain JSON bodies.")
    live_events_enabled: bool = Field(
        default=True, description="Serve POST /live-events (false: an ingress for LTI notices only).")
    live_events_leeway_seconds: int = Field(default=1800, ge=0, description="exp leeway (retries span 20 min).")
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)
    # Tenant binding (canvas_stream.tenancy): which Canvas may deliver live events to this installation.
    live_events_root_account_uuids: str | None = Field(default=None, description="Comma list of root account uuids.")
    live_events_subscription_ids: str | None = Field(default=None, description="Comma list of subscription ids.")
    live_events_allow_any_account: bool = Field(default=False, description="Run unbound: any Canvas account.")

    sqs_queue_urls: str | None = Field(default=None, description="Comma list of SQS queues to poll.")
    sqs_status_port: int = Field(default=8081, description="SQS role /healthz /readyz /metrics port.")
    sqs_visibility_timeout_seconds: int = Field(default=60, ge=1, le=43200,
                                                description="Visibility of a received batch, extended while it waits.")
    sqs_wait_time_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait.")
    sqs_max_backoff_seconds: float = Field(default=30.0, gt=0, description="Longest pause after a failure.")

    lti_platform_jwks_url: str = CANVAS_LTI_JWKS_URL
    lti_platform_issuer: str = CANVAS_LTI_ISSUER
    lti_client_id: str | None = None
    lti_deployment_ids: str | None = Field(default=None, description="Comma-separated allow-list.")
    lti_leeway_seconds: int = Field(default=60, ge=0)
    lti_token_url: str = CANVAS_LTI_TOKEN_URL
    lti_private_key_file: str | None = None
    lti_pns_url: str | None = None
    lti_tool_key_id: str | None = None
    lti_hello_world_wait_seconds: float = Field(
        default=300.0, gt=0,
        description="After `notice-handlers set` for LtiHelloWorldNotice: warn when none arrived within this.")

    worker_batch_size: int = Field(
        default=2000, ge=1,
        description="Most events per database transaction (2,000: +17% worker rate over 1,000, docs/performance.md).")
    worker_batch_seconds: float = Field(default=0.2, gt=0, description="Longest wait to fill a batch.")
    worker_fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=10_000,
        description="Longest a fetch waits at the broker for records (faust fixes it at 1,500 ms; some brokers, "
        "tansu among them, hold a fetch for a share of it even when records arrive, which adds to latency).")
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
    response_deadline_seconds: float = Field(
        default=10.0, gt=0, lt=15,
        description="Ingress: every /live-events and /lti/notices answer (body read included) within this; "
                    "503 otherwise. Below Canvas's 15-second timeout.")

    warehouse_schema: str = Field(
        default=DEFAULT_WAREHOUSE_SCHEMA, description="PostgreSQL schema of every warehouse table, view and function.")
    canvas_home_shard: int | None = Field(
        default=None, ge=1, le=MAX_SHARD,
        description="Shard of the institution's Canvas: its objects' ids are stored in local form (as CD2 does).")
    analyst_role: str = Field(
        default=DEFAULT_ANALYST_ROLE, description="Read-only group role the migrations create for analysts.")

    retention_months: dict[str, int] = Field(
        default_factory=dict,
        description='Months to keep per table, JSON, e.g. {"asset_accesses": 13, "*": 36}; empty keeps everything.')
    retention_interval_hours: float | None = Field(
        default=None, gt=0, description="Workers run retention this often (one of them at a time); unset: only "
                                        "by `canvas-stream retention apply`.")
    retention_lock_timeout_ms: int = Field(
        default=500, ge=10, le=60000,
        description="Longest wait for a history table's lock when dropping a month (then retried): what a "
                    "writer may wait behind it.")
    partitions_ahead_months: int = Field(default=3, ge=1, le=24, description="Monthly partitions created ahead.")
    pseudonymize: bool = Field(
        default=False, description="Replace IP addresses, user agents, logins and emails with keyed hashes at ingest.")
    pseudonymization_key: SecretStr | None = Field(
        default=None, validate_default=True,
        description="Secret HMAC-SHA256 key for PSEUDONYMIZE (32+ bytes); never logged.")

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: str = Field(default="console", description="console or json.")

    @field_validator("warehouse_schema", "analyst_role")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a lower-case PostgreSQL identifier (a-z, 0-9, _; at most 63 characters)")
        return value

    @field_validator("response_deadline_seconds")
    @classmethod
    def _spool_before_the_deadline(cls, value: float, info: ValidationInfo) -> float:
        """With a spool, the broker's wait must end before the answer is due, or the spool never takes over:
        every event of a broker outage would be answered 503 instead of spooled."""
        ack_timeout = info.data.get("kafka_ack_timeout_seconds")
        if info.data.get("spool_dir") and ack_timeout is not None and ack_timeout >= value:
            raise ValueError(f"must be above KAFKA_ACK_TIMEOUT_SECONDS ({ack_timeout:g}) when SPOOL_DIR is set, "
                             "so that a record the broker did not acknowledge is spooled before the answer is due")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return _one_of(value, LOG_LEVELS, "log level")

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        return _one_of(value, LOG_FORMATS, "log format")

    @field_validator("pseudonymization_key")
    @classmethod
    def _key_when_pseudonymizing(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("pseudonymize") and len((value.get_secret_value() if value else "").encode()) < 32:
            raise ValueError("must be set, at least 32 bytes, when PSEUDONYMIZE=true")
        return value

    def pseudonymization_secret(self) -> bytes | None:
        """The key when pseudonymizing is on (else None): for the worker, never for printing."""
        if not self.pseudonymize or self.pseudonymization_key is None:
            return None
        return self.pseudonymization_key.get_secret_value().encode()

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise SettingError("DATABASE_URL", "is not set")
        return async_database_url(self.database_url.get_secret_value())

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise SettingError("KAFKA_BOOTSTRAP_SERVERS", "is not set")
        return self.kafka_bootstrap_servers

    def deployment_ids(self) -> frozenset[str]:
        return frozenset(x.strip() for x in (self.lti_deployment_ids or "").split(",") if x.strip())

    def masked(self) -> dict[str, object]:
        """Settings to print at start; secrets and passwords in URLs are masked."""
        shown: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if name in SECRET_KEYS:
                shown[name] = None if value is None else "***"
            elif isinstance(value, SecretStr):
                shown[name] = mask_url(value.get_secret_value())
            else:
                shown[name] = value
        return shown


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (unparseable: all masked)."""
    from sqlalchemy.engine import make_url  # see _with_driver for why here
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url if "@" not in url else "***"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


@lru_cache(maxsize=1)
def configured_warehouse_schema() -> str:
    """``WAREHOUSE_SCHEMA`` (case-insensitive, like every setting), validated, without reading the others.

    Modules read it at import (the table definitions, the ingress's SQL); reading only this one setting
    keeps a bad unrelated setting (e.g. ``PORT=abc``) from failing an import instead of being reported
    as one line by the CLI. :class:`Settings` validates the same value the same way.
    """
    value = next((v for k, v in os.environ.items() if k.upper() == "WAREHOUSE_SCHEMA"), DEFAULT_WAREHOUSE_SCHEMA)
    if not _IDENTIFIER.match(value):
        raise SettingError("WAREHOUSE_SCHEMA", "must be a lower-case PostgreSQL identifier (a-z, 0-9, _; at most "
                                               "63 characters)")
    return value


def warehouse_sql(sql: str) -> str:
    """``sql`` with ``{schema}`` replaced by the configured warehouse schema (``WAREHOUSE_SCHEMA``).

    For the plain SQL of roles that do not import the warehouse's table definitions (the ingress);
    the schema name is a validated identifier, so the substitution is safe.
    """
    return sql.replace("{schema}", configured_warehouse_schema())
