"""Signing keys get `withdrawn_at`: when an operator withdrew the key (NULL: never).

A withdrawal used to show only as a `retired_at` set far in the past, which a key that simply
retired long ago shares. The revocation feed now tells peers which keys were withdrawn
recently (`PollSessionRevocationsResponse.withdrawn_key_ids`), so that they forget such a key
at once instead of at their key set's next refresh; it reads this column. Keys withdrawn
before this migration have no `withdrawn_at`: their tokens have long expired.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("signing_keys", sa.Column("withdrawn_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("signing_keys", "withdrawn_at")
