"""A movement's time is taken under its wallet's row lock.

`transfer_send_money`, `transfer_top_up`, `transfer_withdraw` and `transfer_return_payout` read
`clock_timestamp()` as they started, before the idempotency claim and the wait for the wallet's
row lock; that time is the movement's `created_at`, its postings' time and its limit's business
day. Two movements of one wallet could then commit in one order with times in the other (the
history's newest row showing a `balance_after` that is not the balance), and one that waited
across midnight Asia/Kolkata counted against the previous day. Each now takes its time right
after it locks the wallet(s); nothing else in them changes (the held two call them). SQL in
`sql/t0012_upgrade.sql`; the downgrade puts t0002's four back (read from `sql/functions.sql`).
CREATE OR REPLACE: owners and privileges stay; SECURITY DEFINER and the pinned search_path are
restated by each statement (a replacement takes its attributes from the new statement).

Revision ID: t0012
Revises: t0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0012_ddl, ledger_t0012_downgrade_ddl

revision = "t0012"
down_revision = "t0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0012_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0012_downgrade_ddl():
        op.execute(statement)
