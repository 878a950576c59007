"""canvas_stream.settings: the database URL forms every role and tool needs, and masking."""

from __future__ import annotations

import pytest

from canvas_stream.settings import Settings, async_database_url, mask_url, plain_database_url


@pytest.mark.parametrize(
    ("given", "asyncpg", "plain"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d", "postgresql://u:p@h:5432/d"),
        ("postgres://h/d", "postgresql+asyncpg://h/d", "postgresql://h/d"),
        ("postgresql+asyncpg://h/d", "postgresql+asyncpg://h/d", "postgresql://h/d"),
        ("postgresql+psycopg2://u:p%40x@h/d?sslmode=require", "postgresql+asyncpg://u:p%40x@h/d?sslmode=require",
         "postgresql://u:p%40x@h/d?sslmode=require"),
        ("sqlite:///x.db", "sqlite:///x.db", "sqlite:///x.db"),  # not PostgreSQL: left alone
        ("not a url", "not a url", "not a url"),
    ],
)
def test_database_url_forms(given: str, asyncpg: str, plain: str) -> None:
    assert async_database_url(given) == asyncpg
    assert plain_database_url(given) == plain
    assert async_database_url(plain_database_url(given)) == asyncpg


def test_passwords_are_masked() -> None:
    assert mask_url("postgresql://user:s3cret@db:5432/warehouse") == "postgresql://user:***@db:5432/warehouse"
    assert mask_url("postgresql://user@db/warehouse") == "postgresql://user@db/warehouse"
    assert mask_url("user:s3cret@nowhere") == "***"
    shown = Settings(database_url="postgres://app:hunter2@db/w").masked()
    assert shown["database_url"] == "postgres://app:***@db/w"
    assert Settings(database_url="postgres://app:hunter2@db/w").require_database_url() == (
        "postgresql+asyncpg://app:hunter2@db/w")


def test_with_a_spool_the_broker_wait_ends_before_the_answer_is_due() -> None:
    with pytest.raises(ValueError, match="KAFKA_ACK_TIMEOUT_SECONDS"):
        Settings(spool_dir="/tmp/spool", kafka_ack_timeout_seconds=12, response_deadline_seconds=10)
    assert Settings(spool_dir="/tmp/spool", kafka_ack_timeout_seconds=5, response_deadline_seconds=10)
    assert Settings(kafka_ack_timeout_seconds=12, response_deadline_seconds=10)  # no spool: the deadline answers 503
