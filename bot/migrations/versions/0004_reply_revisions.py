"""reply library: revisions with review, and a publish counter

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reply_revisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=True),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(), nullable=True),
        sa.Column("review_comment", sa.String(length=1000), nullable=True),
        sa.Column("published_version", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(["author_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["reviewer_id"], ["agents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("published_version"),
    )
    op.create_index("ix_reply_revisions_name", "reply_revisions", ["name"])
    op.create_index("ix_reply_revisions_state", "reply_revisions", ["state"])
    op.create_table(
        "reply_library",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO reply_library (id, version) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("reply_library")
    op.drop_index("ix_reply_revisions_state", table_name="reply_revisions")
    op.drop_index("ix_reply_revisions_name", table_name="reply_revisions")
    op.drop_table("reply_revisions")
