"""canvas.events: the delivering subscription (or SQS queue) and the root account uuid.

Upgrades in place: two nullable columns (no table rewrite), and root_account_uuid backfilled from
the stored payloads (the same places canvas_stream.tenancy reads). The subscription of events
stored before this revision is unknown (the ingress did not keep it) and stays NULL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from processors.warehouse.schema import SCHEMA  # the configured schema (WAREHOUSE_SCHEMA)

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUBSCRIPTION_COMMENT = (
    "What delivered it first: the Data Services subscription id (signed HTTPS token's subscription.id) "
    "or the SQS queue URL; NULL when unknown (unsigned, LTI, before 0006)."
)
ACCOUNT_COMMENT = (
    "Root account the event names (metadata.root_account_uuid / Caliper com.instructure.canvas extension "
    "of the event or its actor)."
)

# A Canvas-format row keeps {metadata, body}; a Caliper row keeps its one data[] item.
BACKFILL = """
UPDATE {schema}.events SET root_account_uuid = COALESCE(
    NULLIF(payload #>> '{metadata,root_account_uuid}', ''),
    NULLIF(payload #>> '{data,0,extensions,com.instructure.canvas,root_account_uuid}', ''),
    NULLIF(payload #>> '{data,0,actor,extensions,com.instructure.canvas,root_account_uuid}', ''))
WHERE format IN ('canvas', 'caliper') AND root_account_uuid IS NULL
""".replace("{schema}", SCHEMA)


def upgrade() -> None:
    op.add_column("events", sa.Column("subscription", sa.Text(), nullable=True, comment=SUBSCRIPTION_COMMENT),
                  schema=SCHEMA)
    op.add_column("events", sa.Column("root_account_uuid", sa.Text(), nullable=True, comment=ACCOUNT_COMMENT),
                  schema=SCHEMA)
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_column("events", "root_account_uuid", schema=SCHEMA)
    op.drop_column("events", "subscription", schema=SCHEMA)
