"""Signing keys get `withdrawn_at`: when an operator withdrew the key (NULL: never).

A withdrawal used to show only as a `retired_at` set far in the past, which a key that simply
retired long ago shares. The revocation feed now tells peers which keys were withdrawn
recently (`PollSessionRevocationsResponse.withdrawn_key_ids`), so that they forget such a key
at once instead of at their key set's next refresh; it reads this column. Keys withdrawn
before this migration have no `withdrawn_at`: their tokens have long expired.

ADD COLUMN and DROP COLUMN take ACCESS EXCLUSIVE on `signing_keys` (every reader of the key
set waits behind them), briefly: nothing is scanned or rewritten, and the wait for the lock is
bounded by the migration's lock_timeout (`vaultpay_common.migrations.run_env`).

The downgrade drops the column, and with it when each key was withdrawn: not backed up. After
an upgrade again those keys read as never withdrawn (still retired: `retired_at` stays), so the
revocation feed no longer names them to peers, which forget them at their key set's refresh.

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
