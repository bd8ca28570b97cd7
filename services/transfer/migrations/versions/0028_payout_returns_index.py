"""The payouts the bank returned get partial indexes of their own.

A staff listing of the returned payouts (`category=WITHDRAW&type=CREDIT`) read every rare
row of the table, an owner's every withdrawal of the owner, to find the few returns among
them. `wallet_transactions_payout_returns_idx` (everyone's, by time) and
`wallet_transactions_user_payout_returns_idx` (each owner's) hold the WITHDRAW CREDIT rows
alone. SQL in `sql/t0028_upgrade.sql`, its downgrade `sql/t0028_downgrade.sql`.

Built (and dropped) CONCURRENTLY, so sends go on while they build: each statement runs in
Alembic's autocommit block.

Revision ID: t0028
Revises: t0027
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently
from vaultpay_transfer.adapters.ddl import ledger_t0028_ddl, ledger_t0028_downgrade_ddl

revision = "t0028"
down_revision = "t0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with concurrently():
        for statement in ledger_t0028_ddl():
            op.execute(statement)


def downgrade() -> None:
    with concurrently():
        for statement in ledger_t0028_downgrade_ddl():
            op.execute(statement)
