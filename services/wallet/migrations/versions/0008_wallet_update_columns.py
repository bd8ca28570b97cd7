"""wallet's role may UPDATE only the columns of `wallets` that wallet's code changes.

w0001 granted UPDATE on the whole of `wallets`, and transfer's trigger guards only `balance`:
a wallet bug could rewrite a wallet's currency (rupees read as dollars), its owner, its id or
its creation time, and only the ledger verifier's totals would notice, later. Deny by default:
the table-level UPDATE is revoked and UPDATE granted on the columns wallet's repository writes
(`SqlWalletRepository.update`): status, kyc_tier, updated_at and closed_at. id, user_id,
display_name (no use case renames a wallet), currency, balance (the ledger's, changed by
transfer's SECURITY DEFINER money functions as the owner) and created_at are set once, at
INSERT. `SELECT ... FOR UPDATE` of a wallet row needs UPDATE of one column only, so the row
locks of wallet's use cases and of its PIN-check functions (SECURITY INVOKER) still hold.

Where one role serves every service (transfer's included) nothing else needs the table-level
grant: transfer's role only reads `wallets` (t0007), and its writes are the money functions'.

The downgrade gives back the table-level UPDATE (revoking it drops the column grants too).

Revision ID: w0008
Revises: w0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

revision = "w0008"
down_revision = "w0007"
branch_labels = None
depends_on = None

# What SqlWalletRepository.update writes; keep the two in step.
UPDATABLE_COLUMNS = ("status", "kyc_tier", "updated_at", "closed_at")


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.execute(f'REVOKE UPDATE ON wallets FROM "{app_role}"')
    op.execute(f'GRANT UPDATE ({", ".join(UPDATABLE_COLUMNS)}) ON wallets TO "{app_role}"')


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    # A table's REVOKE takes its columns' grants of the same privilege with it.
    op.execute(f'REVOKE UPDATE ON wallets FROM "{app_role}"')
    op.execute(f'GRANT UPDATE ON wallets TO "{app_role}"')
