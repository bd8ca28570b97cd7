"""The payout lease backs off with the payout's attempts.

`transfer_lease_payouts` leased every payout for the worker's lease (60 s), so a payout whose
bank call kept failing (the bank unreachable) was leased again every minute, forever. Its lease
is now `p_lease_seconds * 2^least(attempts, 6)`, attempts counted before this lease: 60 s,
120 s, 240 s ... capped at 64 times (about 64 minutes). A payout the bank answers is settled or
returned within its lease, so a longer lease only delays a retry after a failure; a held payout
(t0011 gives its attempt back) does not back off. Otherwise t0004's function, byte for byte.
SQL in `sql/t0013_upgrade.sql`; the downgrade puts t0004's lease back (`sql/t0004_upgrade.sql`).
CREATE OR REPLACE: owner and privileges stay; SECURITY DEFINER and the pinned search_path are
restated by the statement (a replacement takes its attributes from the new statement).

Revision ID: t0013
Revises: t0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0013_ddl, ledger_t0013_downgrade_ddl

revision = "t0013"
down_revision = "t0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0013_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0013_downgrade_ddl():
        op.execute(statement)
