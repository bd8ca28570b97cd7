"""A payout changes only along its progress, in the database itself.

wallet_transactions rows were guarded by a trigger (their status transitions); payouts only
by grants (the app role cannot write them) and the money functions' own checks, so a bug in
one of those functions, which run as the owner, could have settled a returned payout, changed
a pending payout's amount or destination, or deleted one. Triggers now hold every writer: what
a payout is never changes; while PENDING only the worker's bookkeeping moves (attempts,
available_at, held_since, failure_reason); it ends once, PENDING -> SETTLED | RETURNED, with
its finished_at; a finished payout never changes; none is deleted or truncated. No function
changes. SQL in `sql/t0017_upgrade.sql`, its downgrade `sql/t0017_downgrade.sql`.

Revision ID: t0017
Revises: t0016
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0017_ddl, ledger_t0017_downgrade_ddl

revision = "t0017"
down_revision = "t0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0017_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0017_downgrade_ddl():
        op.execute(statement)
