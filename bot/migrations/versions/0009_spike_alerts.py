"""inbound spike alerts: spike_alerts, and an index to count customer messages by time

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ACTIVE = sa.text("ended_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "spike_alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("latest_count", sa.Integer(), nullable=False),
        sa.Column("peak_count", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.Column("usual", sa.Float(), nullable=False),
        sa.Column("weeks", sa.Integer(), nullable=False),
        sa.Column("factor", sa.Float(), nullable=False),
        sa.Column("minimum", sa.Integer(), nullable=False),
        sa.Column("webhook_state", sa.String(length=16), nullable=False),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.Column("webhook_error", sa.String(length=300), nullable=True),
        sa.Column("webhook_sent_at", sa.DateTime(), nullable=True),
        sa.Column("webhook_claimed_until", sa.DateTime(), nullable=True),
    )
    # One active spike at a time, whatever the number of desk replicas checking.
    op.create_index("one_active_spike", "spike_alerts", ["kind"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_index("ix_messages_author_created_at", "messages", ["author", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_author_created_at", table_name="messages")
    op.drop_index("one_active_spike", table_name="spike_alerts",
                  sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.drop_table("spike_alerts")
