"""contacts: one customer's conversations across channels, and the phone and email
hashes that link them

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "contact_identifiers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(length=200), sa.ForeignKey("conversations.id"),
                  nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("conversation_id", "kind", "hash"),
    )
    op.create_index("ix_contact_identifiers_hash", "contact_identifiers", ["hash"])
    op.create_table(
        "contact_conversations",
        sa.Column("conversation_id", sa.String(length=200), sa.ForeignKey("conversations.id"),
                  primary_key=True),
        sa.Column("contact_id", sa.Integer(), sa.ForeignKey("contacts.id"), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_contact_conversations_contact_id", "contact_conversations",
                    ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_contact_conversations_contact_id", table_name="contact_conversations")
    op.drop_table("contact_conversations")
    op.drop_index("ix_contact_identifiers_hash", table_name="contact_identifiers")
    op.drop_table("contact_identifiers")
    op.drop_table("contacts")
