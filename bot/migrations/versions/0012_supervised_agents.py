"""supervised agents: trainees whose replies wait for a supervisor's approval

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("trainee", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("approved_by", sa.Integer(), nullable=True))
    op.create_table(
        "reply_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(length=200), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("draft", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reply_name", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reply_reviews_status", "reply_reviews", ["status", "id"])
    op.create_index("ix_reply_reviews_ticket_id", "reply_reviews", ["ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_reply_reviews_ticket_id", table_name="reply_reviews")
    op.drop_index("ix_reply_reviews_status", table_name="reply_reviews")
    op.drop_table("reply_reviews")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("approved_by")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("trainee")
