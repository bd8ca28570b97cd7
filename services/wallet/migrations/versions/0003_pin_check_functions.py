"""The PIN check's common case in one call per phase: `wallet_pin_reserve` and
`wallet_pin_settle_match` (PL/pgSQL, SECURITY INVOKER, EXECUTE granted to the app role
only), from `vaultpay_wallet/adapters/sql/pin_check.sql`.

Each does what adapters/pins_pg.py's explicit transaction of five round trips did (the same
advisory locks, conditions, counter updates and idempotency rows), so the fast path costs
one statement per phase. No table changes; the downgrade drops the two functions (a wallet
of the previous release does not call them).

Revision ID: w0003
Revises: w0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_wallet.adapters.ddl import pin_check_ddl, pin_check_drop_ddl

revision = "w0003"
down_revision = "w0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in pin_check_ddl(context.config.attributes["app_role"]):
        op.execute(statement)


def downgrade() -> None:
    for statement in pin_check_drop_ddl():
        op.execute(statement)
