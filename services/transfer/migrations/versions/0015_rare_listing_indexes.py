"""The staff listing's rare filters get partial indexes.

AdminListTransactions filtered by a rare category (TOP_UP, WITHDRAW, REFUND, REVERSAL) or a rare
status (FAILED, REVERSED), without a user or a wallet, walked the time index of the whole table
(almost all P2P rows, COMPLETED) until it had a page: the whole index when no row matched. Two
partial indexes, `(category, created_at DESC, id DESC) WHERE category NOT IN ('P2P_SEND',
'P2P_RECEIVE')` and `(status, created_at DESC, id DESC) WHERE status IN ('FAILED', 'REVERSED')`,
hold the rare rows only: a P2P send writes neither. SQL in `sql/t0015_upgrade.sql`, its
downgrade `sql/t0015_downgrade.sql`.

Built (and dropped) CONCURRENTLY, so sends go on while they build: each statement runs in
Alembic's autocommit block, after the revisions before it committed (`run_env` lets Alembic
give each revision a transaction of its own).

Revision ID: t0015
Revises: t0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently
from vaultpay_transfer.adapters.ddl import ledger_t0015_ddl, ledger_t0015_downgrade_ddl

revision = "t0015"
down_revision = "t0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with concurrently():
        for statement in ledger_t0015_ddl():
            op.execute(statement)


def downgrade() -> None:
    with concurrently():
        for statement in ledger_t0015_downgrade_ddl():
            op.execute(statement)
