"""LTI replay protection and the hello-world check: canvas.lti_nonces and canvas.lti_handler_subscriptions.

Two new tables, nothing existing changes, so an existing warehouse upgrades in place without a
rewrite. Both are operational (written by the ingress and by `canvas-stream notice-handlers set`),
not derived from events, so `canvas-stream replay` leaves them alone.

Revision ID: 0009
Revises: 0007b
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from processors.warehouse.schema import SCHEMA  # the configured schema (WAREHOUSE_SCHEMA)
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0007b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lti_nonces",
        sa.Column("nonce", sa.Text(), nullable=False,
                  comment="nonce claim of a verified LTI notice (Canvas: a random UUID per notice JWT)."),
        sa.Column("notice_id", sa.Text(), nullable=False,
                  comment="notice.id of the notice that carried it first; the same nonce under another notice id "
                          "is a replay and is rejected."),
        sa.Column("expires_at", TIME, nullable=False,
                  comment="exp of that notice's JWT plus LTI_LEEWAY_SECONDS: the token is refused after this "
                          "anyway, so the ingress purges the row."),
        sa.Column("seen_at", TIME, server_default=sa.text("now()"), nullable=False,
                  comment="When an ingress replica first recorded it."),
        sa.PrimaryKeyConstraint("nonce"),
        schema=SCHEMA,
        comment="LTI notice nonces seen by any ingress replica within their token's lifetime: replay protection "
                "(operational; not event data).",
    )
    op.create_index("lti_nonces_expires_at_idx", "lti_nonces", ["expires_at"], unique=False, schema=SCHEMA)
    op.create_table(
        "lti_handler_subscriptions",
        sa.Column("deployment_id", sa.Text(), nullable=False,
                  comment="LTI deployment_id the platform's notice-handlers endpoint answered for."),
        sa.Column("notice_type", sa.Text(), nullable=False,
                  comment="Notice type subscribed, e.g. LtiHelloWorldNotice."),
        sa.Column("handler", sa.Text(), nullable=False, comment="Handler URL subscribed; '' after an unsubscribe."),
        sa.Column("max_batch_size", sa.BigInteger(), nullable=True,
                  comment="max_batch_size sent with the subscription, if any."),
        sa.Column("pns_url", sa.Text(), nullable=True,
                  comment="The platform's notice-handlers URL the subscription was sent to."),
        sa.Column("set_at", TIME, nullable=False,
                  comment="When `canvas-stream notice-handlers set` sent it (taken before the call: Canvas sends "
                          "the LtiHelloWorldNotice at once)."),
        sa.PrimaryKeyConstraint("deployment_id", "notice_type"),
        schema=SCHEMA,
        comment="Notice handlers subscribed with `canvas-stream notice-handlers set`, per deployment and type; "
                "the hello-world check waits from set_at (operational; kept apart from lti_deployments, which "
                "`canvas-stream replay` rebuilds from events).",
    )


def downgrade() -> None:
    op.drop_table("lti_handler_subscriptions", schema=SCHEMA)
    op.drop_index("lti_nonces_expires_at_idx", table_name="lti_nonces", schema=SCHEMA)
    op.drop_table("lti_nonces", schema=SCHEMA)
