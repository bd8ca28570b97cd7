"""Nobody but the owner may EXECUTE the close guard's trigger function.

t0003's `transfer_refuse_close_with_pending_withdrawal()` kept PostgreSQL's default EXECUTE to
PUBLIC, and t0007 made it SECURITY DEFINER: any role of the database (kyc's, say, which may
create TEMP tables) could attach it to a table of its own, insert a wallet id and learn from
the refusal whether that wallet has a withdrawal being paid out. CREATE TRIGGER needs EXECUTE
of its function, a trigger firing does not: PUBLIC's EXECUTE is revoked, and t0003's trigger
on `wallets` still refuses wallet's role's close while a withdrawal is pending. SQL in
`sql/t0025_upgrade.sql`; the downgrade (`sql/t0025_downgrade.sql`) gives PUBLIC its EXECUTE
back.

Revision ID: t0025
Revises: t0024
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0025_ddl, ledger_t0025_downgrade_ddl

revision = "t0025"
down_revision = "t0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0025_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0025_downgrade_ddl():
        op.execute(statement)
