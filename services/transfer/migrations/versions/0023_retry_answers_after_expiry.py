"""A retry whose stored answer expired is told its request id was used, and a held movement's
look-up reads after it takes the key.

SendMoney's, Withdraw's and TopUp's functions answer IDEMPOTENCY_KEY_REUSED for a request id
that already moved the user's money before the wallet's other refusals (a payment that went
through was refused RECIPIENT_CLOSED, say, on a retry after its stored answer's 48 h); a
movement that passes runs the same statements. `transfer_hold_lookup` replaces the held
movement's one-statement look-up, whose snapshot predated its lock: it reads, takes the key,
and reads again when it took it, so an attempt that committed in between is answered from its
stored reply rather than asking wallet for the PIN again.

SQL in `sql/t0023_upgrade.sql`; the downgrade drops the look-up and restores t0016's send and
withdraw and t0020's top-up.

Revision ID: t0023
Revises: t0022
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_transfer.adapters.ddl import ledger_t0023_ddl, ledger_t0023_downgrade_ddl

revision = "t0023"
down_revision = "t0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0023_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0023_downgrade_ddl(app_role):
        op.execute(statement)
