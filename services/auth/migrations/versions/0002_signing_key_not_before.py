"""Signing keys get `not_before`: a rotated-in key is published before it signs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("signing_keys", sa.Column("not_before", sa.DateTime(timezone=True)))
    op.execute("UPDATE signing_keys SET not_before = created_at")
    op.alter_column("signing_keys", "not_before", nullable=False)


def downgrade() -> None:
    op.drop_column("signing_keys", "not_before")
