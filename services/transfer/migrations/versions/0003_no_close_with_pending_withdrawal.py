"""No wallet closes while a withdrawal of it is still being paid out.

A withdrawal moves the money into payouts-in-flight at once and stays PENDING until the payout
worker settles or returns it; a returned payout credits the wallet, which must not be CLOSED
by then. A trigger on wallets (BEFORE UPDATE OF status, to CLOSED) refuses the close while the
wallet has a PENDING withdrawal: check_violation on the constraint name
`wallets_close_without_pending_withdrawal`, which wallet maps to
WALLET_HAS_PENDING_WITHDRAWAL. transfer_withdraw and the close both hold the wallet's row
lock, so the check cannot race a withdrawal. SQL in `sql/t0003_upgrade.sql`; the downgrade
(`sql/t0003_downgrade.sql`) drops the trigger and its function.

Revision ID: t0003
Revises: t0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0003_ddl, ledger_t0003_downgrade_ddl

revision = "t0003"
down_revision = "t0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0003_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0003_downgrade_ddl():
        op.execute(statement)
