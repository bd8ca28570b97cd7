"""The payout lease is fenced.

The worker leases a batch of payouts and then checks and pays out one after the other; a payout
whose lease ran out meanwhile was leased again by another worker, and both asked the bank (the
first worker's freeze check still answered CLEAR); a stale worker's hold also cut the live
worker's lease short. `transfer_lease_payouts` now also returns the lease's end (`lease_until`,
the `available_at` it set), dropped and created again (a new type of result), with its
privileges given again to transfer's role. `transfer_claim_payout_for_bank` replaces
`transfer_hold_payout_if_frozen`: it answers LEASE_LOST, changing nothing, when the payout's
`available_at` is no longer the caller's `lease_until`; otherwise t0011's freeze hold, and for
a payout that goes to the bank it renews the lease for the bank call. SQL in
`sql/t0014_upgrade.sql`, executable by transfer's role only; the downgrade
(`sql/t0014_downgrade.sql`) drops both, then creates t0013's lease (`sql/t0013_upgrade.sql`)
and t0011's hold check (`sql/t0011_upgrade.sql`) with their privileges.

Revision ID: t0014
Revises: t0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_transfer.adapters.ddl import ledger_t0014_ddl, ledger_t0014_downgrade_ddl

revision = "t0014"
down_revision = "t0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0014_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0014_downgrade_ddl(app_role):
        op.execute(statement)
