"""GetTransferStats reads closed hours from a rollup.

GetTransferStats counted every movement of the last 30 days on each call, a cost that grew
with the month's volume until it outran wallet's peer deadline. `transfer_stats_hourly` holds
each closed hour's count and volume per currency, added by transfer's rollup job
(`SqlStatsRollup`), and `transfer_stats_rollup` up to when (its one row); GetTransferStats
reads those and counts only the partial first hour and the tail since. SQL in
`sql/t0027_upgrade.sql`; the downgrade drops both tables.

Revision ID: t0027
Revises: t0026
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_transfer.adapters.ddl import ledger_t0027_ddl, ledger_t0027_downgrade_ddl

revision = "t0027"
down_revision = "t0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in ledger_t0027_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0027_downgrade_ddl():
        op.execute(statement)
