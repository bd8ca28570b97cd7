"""A daily limit's refusal also tells the month's limit and usage.

`transfer_limit_refusal`'s DAILY_LIMIT_EXCEEDED reply gains `monthly_limit_minor` and
`monthly_used_minor`, so the service can tell a client to retry at the day's end only when
the month would let the movement through then (else at the month's end, or not at all). SQL in
`sql/t0006_upgrade.sql`; the downgrade puts t0002's function back.

Revision ID: t0006
Revises: t0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0006_ddl, ledger_t0006_downgrade_ddl

revision = "t0006"
down_revision = "t0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0006_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0006_downgrade_ddl():
        op.execute(statement)
