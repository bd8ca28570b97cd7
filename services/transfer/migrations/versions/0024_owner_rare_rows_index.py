"""An owner's rows other than COMPLETED P2P sides get a partial index.

A history filtered by type (ListTransactions, or AdminListTransactions of one wallet) or by a
status other than COMPLETED read the owner's whole history when the rows asked for were
sparse in it: a hot wallet's DEBIT page, its PENDING withdrawals. The partial index
`(user_id, created_at DESC, id DESC) WHERE category NOT IN ('P2P_SEND', 'P2P_RECEIVE') OR
status <> 'COMPLETED'` holds those rows; a P2P send writes no entry in it. SQL in
`sql/t0024_upgrade.sql`, its downgrade `sql/t0024_downgrade.sql`.

Built (and dropped) CONCURRENTLY, so sends go on while it builds: each statement runs in
Alembic's autocommit block.

Revision ID: t0024
Revises: t0023
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently
from vaultpay_transfer.adapters.ddl import ledger_t0024_ddl, ledger_t0024_downgrade_ddl

revision = "t0024"
down_revision = "t0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with concurrently():
        for statement in ledger_t0024_ddl():
            op.execute(statement)


def downgrade() -> None:
    with concurrently():
        for statement in ledger_t0024_downgrade_ddl():
            op.execute(statement)
