"""A payout's attempts count its bank calls, not its leases; the ledger verifier may read who
owns a wallet.

`transfer_lease_payouts` (t0013, t0014) added an attempt on every lease and doubled the next
lease with it, and the payout worker alerts from the 7th attempt. A payout leased but never sent
to the bank (its lease lost mid-batch to another worker, LEASE_LOST, or its claim failed on a
database error) gained one all the same: it climbed to the alert without the bank ever failing,
and one held by a worker that crashed waited up to 64 leases. The lease now counts nothing and
backs off with the bank calls made so far; `transfer_claim_payout_for_bank` counts the attempt
when it answers that the bank may be asked (CLEAR, RELEASED), in the UPDATE that renews the
lease for the call, and returns the count (`attempts`, a new type of result: dropped and
created again, its privileges given again to transfer's role). A hold no longer gives an
attempt back (the lease took none). The fence is t0014's, unchanged.

Transfer's role is granted SELECT of `wallets.user_id` (t0007 granted id, status, currency and
balance only): the ledger verifier's `history_rows_owned_by_wallet_owner` compares each
history row's `user_id` (by which ListTransactions and GetTransaction find it) with its
wallet's owner.

SQL in `sql/t0021_upgrade.sql`; the downgrade (`sql/t0021_downgrade.sql`) revokes the column's
grant and drops the claim, then creates t0014's claim with its privileges and puts t0014's
lease back (CREATE OR REPLACE), both read from `sql/t0014_upgrade.sql`.

Revision ID: t0021
Revises: t0020
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_transfer.adapters.ddl import ledger_t0021_ddl, ledger_t0021_downgrade_ddl

revision = "t0021"
down_revision = "t0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0021_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0021_downgrade_ddl(app_role):
        op.execute(statement)
