"""The payout worker's lease finds the payouts it leased by their key.

PostgreSQL 15 plans a SQL function's statement without its arguments' values, so
`transfer_lease_payouts`' `LIMIT p_limit` is a guess; after a backlog of payouts the guess
made t0002's `IN (subquery)` a hash join over the whole payouts table, once a second. The
leased ids now come back as one array and the UPDATE finds each by its primary key. SQL in
`sql/t0004_upgrade.sql`; the downgrade puts t0002's lease back (read from `sql/functions.sql`).

Revision ID: t0004
Revises: t0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0004_ddl, ledger_t0004_downgrade_ddl

revision = "t0004"
down_revision = "t0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0004_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0004_downgrade_ddl():
        op.execute(statement)
