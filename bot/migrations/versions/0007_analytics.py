"""the reply a message came from, and what the analytics queries need

Revision ID: 0007
Revises: 0006

Messages by time use `ix_messages_author_created_at` (0009, shared with the spike
alerts); tickets get their own here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("reply_name", sa.String(length=100), nullable=True))
    op.create_index("ix_tickets_created_at", "tickets", ["created_at"])
    op.create_index("ix_tickets_conversation_created", "tickets",
                    ["conversation_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_tickets_conversation_created", table_name="tickets")
    op.drop_index("ix_tickets_created_at", table_name="tickets")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("reply_name")
