"""A PIN-checked movement's key is held from its stored-answer lookup to its COMMIT, across
transfer processes.

SendMoney and Withdraw take the key's session-level advisory lock with their stored-answer
lookup, before they ask wallet for the PIN, and call the ledger through
`transfer_send_money_held` / `transfer_withdraw_held`, which pass the hold to the ledger
transaction's own claim. A retry that another transfer process serves meanwhile is
IDEMPOTENCY_KEY_IN_USE instead of a refusal the first attempt's commit could contradict. SQL
in `sql/t0005_upgrade.sql`; the downgrade drops the three functions.

Revision ID: t0005
Revises: t0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_transfer.adapters.ddl import ledger_t0005_ddl, ledger_t0005_downgrade_ddl

revision = "t0005"
down_revision = "t0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0005_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0005_downgrade_ddl():
        op.execute(statement)
