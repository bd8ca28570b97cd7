"""A payment reference already credited is answered before the wallet's other refusals.

`transfer_top_up` found a credited (payment_method, payment_reference) only by its first
write, the INSERT ... ON CONFLICT DO NOTHING into `top_up_payments`, after the wallet's state,
currency, KYC, request-id reuse and limit checks: a TopUp that committed but whose reply was
lost, retried under a new request id with the same reference, was refused
DAILY_LIMIT_EXCEEDED (WALLET_FROZEN if the wallet was frozen meanwhile), a definite refusal
saying the payment was not credited. It now looks the pair up (one probe of the table's
primary key) right after it locks the wallet's row, after the idempotency claim (the same
request id still replays), and answers PAYMENT_REFERENCE_USED before any other refusal; the
INSERT stays as the backstop. SQL in `sql/t0019_upgrade.sql`; the downgrade puts t0016's
`transfer_top_up` back (read from `sql/t0016_upgrade.sql`). CREATE OR REPLACE: owner and
privileges stay.

Revision ID: t0019
Revises: t0018
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0019_ddl, ledger_t0019_downgrade_ddl

revision = "t0019"
down_revision = "t0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0019_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0019_downgrade_ddl():
        op.execute(statement)
