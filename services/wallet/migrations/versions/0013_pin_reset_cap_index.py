"""RequestPinReset's hourly count reads one wallet's tokens, not every wallet's last hour.

* `pin_reset_tokens_wallet_created_idx`, `(wallet_id, created_at)`: the hourly cap counts the
  tokens one wallet was mailed in the last hour, used or not
  (`SqlPinResetTokenRepository.created_since`, under the wallet's row lock). The wallet's index
  (`pin_reset_tokens_wallet_idx`) holds its unused tokens only, and the retention's
  (`pin_reset_tokens_expires_idx`) every wallet's: the count read the last ~75 minutes of every
  wallet's tokens to find a handful (review of 1d32ff0). With this one it reads that wallet's
  range, in order.

No grant: the index follows the table's.

Built (and dropped) CONCURRENTLY, so reset requests and resets go on while it builds: each
statement runs in Alembic's autocommit block. A build that failed leaves an INVALID index
behind; the DROP first makes running the migration again build it again. The downgrade drops
it (the previous release's count reads the retention's index as before).

Revision ID: w0013
Revises: w0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently

revision = "w0013"
down_revision = "w0012"
branch_labels = None
depends_on = None

_INDEX = "pin_reset_tokens_wallet_created_idx"


def upgrade() -> None:
    with concurrently():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {_INDEX} ON pin_reset_tokens (wallet_id, created_at)"
        )


def downgrade() -> None:
    with concurrently():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX}")
