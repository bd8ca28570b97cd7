"""Transfer's role may read which freezes hold a wallet, so a WALLET_FROZEN the ledger answers
tells the freeze.

A movement refused WALLET_FROZEN by the ledger function (a TopUp into a frozen wallet; a send
or withdrawal whose wallet was frozen after wallet's PIN check) answered the bare code, while
wallet's PIN check tells `freeze_reason` and `until`. After such a refusal, and only then,
transfer's ledger adapter reads the freeze that holds the caller's wallet; the money
functions do not change.

Transfer's role is granted SELECT of `wallet_freezes`' wallet_id, source and until only (not
its note nor set_by).

SQL in `sql/t0022_upgrade.sql`; the downgrade (`sql/t0022_downgrade.sql`) revokes the
columns' grant.

Revision ID: t0022
Revises: t0021
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_transfer.adapters.ddl import ledger_t0022_ddl, ledger_t0022_downgrade_ddl

revision = "t0022"
down_revision = "t0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0022_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0022_downgrade_ddl(app_role):
        op.execute(statement)
