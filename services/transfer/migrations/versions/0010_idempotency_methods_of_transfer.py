"""The ledger's idempotency claim and record take transfer's methods only.

The money functions are SECURITY DEFINER and read and write `idempotency_records` as the
table's owner, whom row-level security (t0009) does not bind; t0002's `transfer_claim` and
`transfer_remember` used the method their caller passed, so transfer's role could probe or
store a record under wallet's or kyc's methods through `transfer_send_money`, `transfer_top_up`
or `transfer_withdraw` (and the held two). Both now refuse, insufficient_privilege, a method that
does not start with '/vaultpay.transfer.', before anything is locked, read or written. SQL in
`sql/t0010_upgrade.sql`; the downgrade puts t0002's two functions back (read from
`sql/functions.sql`). CREATE OR REPLACE: owners and privileges stay.

Revision ID: t0010
Revises: t0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0010_ddl, ledger_t0010_downgrade_ddl

revision = "t0010"
down_revision = "t0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0010_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0010_downgrade_ddl():
        op.execute(statement)
