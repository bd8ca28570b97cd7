"""A payout of a wallet that staff froze is held, not paid out.

The payout worker asks `transfer_hold_payout_if_frozen` about each leased payout before it asks
the bank: under the payout's row lock, then the wallet's (the return path's order), a wallet
FROZEN by an ADMIN freeze in force (or FROZEN with no freeze row to explain it) holds the
payout. It stays PENDING, its money in payouts-in-flight, due again after the worker's hold
interval, and goes to the bank once the freeze is lifted. A self-freeze or a PIN lockout does
not hold a payout accepted before it. `payouts.held_since` (new, nullable) marks a held payout,
so the worker logs a hold and its release once each. SQL in `sql/t0011_upgrade.sql`, executable
by transfer's role only; the downgrade (`sql/t0011_downgrade.sql`) drops the function and the
column, and with it which payouts were held since when (not backed up: after an upgrade again
a payout still held is logged as newly held). Both ALTER TABLEs wait for `payouts`' lock
within the migration's lock_timeout (`run_env`).

Revision ID: t0011
Revises: t0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_transfer.adapters.ddl import ledger_t0011_ddl, ledger_t0011_downgrade_ddl

revision = "t0011"
down_revision = "t0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0011_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0011_downgrade_ddl():
        op.execute(statement)
