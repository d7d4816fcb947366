"""the conversation's language and where it came from

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing conversations keep the default language until
    # their platform, a detection or an agent says otherwise (bot/language.py).
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("language_source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_column("language_source")
        batch_op.drop_column("language")
