"""The double-entry ledger: movements, postings, wallet-side transactions, top-up payment
references, payouts and limit usage; the SECURITY DEFINER functions that are the only way
money moves; the triggers that keep postings append-only, transaction rows on their status
transitions and wallets.balance in the ledger's hands (sql/*.sql beside the adapters).

Grants: the app role may SELECT the ledger tables and EXECUTE the money functions; it has no
INSERT, UPDATE or DELETE on any of them. Needs the platform chain (idempotency_records,
outbox_events) and the wallet chain (wallets, wallet_freezes, wallet_limit_overrides,
system_settings), which `vaultpay-transfer migrate` runs first.

Revision ID: t0001
Revises:
Create Date: 2026-12-16
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.migrations import refuse_to_drop_rows
from vaultpay_transfer.adapters.ddl import ledger_ddl, ledger_drop_ddl

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    refuse_to_drop_rows(
        "ledger_transactions",
        "ledger_postings",
        "wallet_transactions",
        "top_up_payments",
        "payouts",
        "limit_usage",
    )
    for statement in ledger_drop_ddl():
        op.execute(statement)
