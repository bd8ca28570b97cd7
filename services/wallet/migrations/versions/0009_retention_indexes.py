"""Indexes for the stale PIN-lock sweep and for the retention of expired rows.

* `wallet_pins_stale_lock_idx`, `(last_attempt_at) WHERE failed_attempts >= 3`: the freeze
  sweep (every 30 s) looks for counters left at 3 with no lockout written
  (`SqlPinRepository.stale_lock_wallet_ids`) and read every row of `wallet_pins` to find them
  (a parallel seq scan at 300,000 wallets). The index holds the used-up counters only (a
  handful at any time; a wrong PIN below the third writes no entry). The repository states
  the predicate as literal SQL, so a generic plan of the prepared statement can use it too.
* `pin_reset_tokens_expires_idx`, `ip_confirmations_expires_idx`, `trusted_ips_expires_idx`,
  each `(expires_at)`: the hourly cleanup deletes rows expired for more than a day
  (`adapters.retention_sql`) in batches read from these, oldest first, without a scan.

No grant: wallet's role has held DELETE on the three tables since w0001 / w0002 (moved to its
own role by w0005).

Built (and dropped) CONCURRENTLY, so PIN checks and confirmations go on while they build: each
statement runs in Alembic's autocommit block. A build that failed leaves an INVALID index
behind; the DROP first makes running the migration again build it again.

Revision ID: w0009
Revises: w0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently

revision = "w0009"
down_revision = "w0008"
branch_labels = None
depends_on = None

# name: (table, definition). The stale-lock predicate must stay what the sweep's query says.
_INDEXES = {
    "wallet_pins_stale_lock_idx": (
        "wallet_pins",
        "(last_attempt_at) WHERE failed_attempts >= 3",
    ),
    "pin_reset_tokens_expires_idx": ("pin_reset_tokens", "(expires_at)"),
    "ip_confirmations_expires_idx": ("ip_confirmations", "(expires_at)"),
    "trusted_ips_expires_idx": ("trusted_ips", "(expires_at)"),
}


def upgrade() -> None:
    with concurrently():
        for name, (table, definition) in _INDEXES.items():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY {name} ON {table} {definition}")


def downgrade() -> None:
    with concurrently():
        for name in reversed(_INDEXES):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
