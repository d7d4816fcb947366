"""inbox states, conversation leases and outbox sends

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("inbox_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("reply_to", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(), nullable=True))
    op.create_index("ix_messages_inbox_state", "messages", ["inbox_state"])
    op.create_index("ix_messages_reply_to", "messages", ["reply_to"])
    op.create_index("ix_messages_outbox", "messages", ["delivery", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_outbox", "messages")
    op.drop_index("ix_messages_reply_to", "messages")
    op.drop_index("ix_messages_inbox_state", "messages")
    with op.batch_alter_table("messages") as batch_op:
        for column in ("claimed_until", "claimed_by", "retry_at", "reply_to", "attempts",
                       "inbox_state"):
            batch_op.drop_column(column)
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
