"""A money movement's right PIN settled and its client address looked up in one call:
`wallet_pin_settle_movement` (PL/pgSQL, SECURITY INVOKER, EXECUTE granted to the app role
only), from `vaultpay_wallet/adapters/sql/movement_check.sql`.

It calls w0003's `wallet_pin_settle_match` and then reads (and, at most every few minutes,
touches) the address's `trusted_ips` row, so the movement check reads no Redis. No table
changes; `wallet_pin_settle_match` is kept (a wallet of the previous release calls it), and
the downgrade drops the new function only.

Revision ID: w0004
Revises: w0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_wallet.adapters.ddl import movement_check_ddl, movement_check_drop_ddl

revision = "w0004"
down_revision = "w0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in movement_check_ddl(context.config.attributes["app_role"]):
        op.execute(statement)


def downgrade() -> None:
    for statement in movement_check_drop_ddl():
        op.execute(statement)
