"""GetTransferStats counts the movements completed in its windows, by their completion time.

The statistics selected the counted rows (COMPLETED or REVERSED; the debit, or a top-up's
credit) by created_at: a withdrawal created before the window and settled inside it was
missing. They now select them by completed_at: a P2P send by created_at (it completes at
creation), the rare categories by a partial index, `(completed_at) WHERE category NOT IN
('P2P_SEND', 'P2P_RECEIVE') AND status IN ('COMPLETED', 'REVERSED') AND (type = 'DEBIT' OR
category = 'TOP_UP')`, which a P2P send never writes. SQL in `sql/t0018_upgrade.sql`, its
downgrade `sql/t0018_downgrade.sql`.

Built (and dropped) CONCURRENTLY, so sends go on while it builds: each statement runs in
Alembic's autocommit block, after the revisions before it committed (`run_env` lets Alembic
give each revision a transaction of its own).

Revision ID: t0018
Revises: t0017
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently
from vaultpay_transfer.adapters.ddl import ledger_t0018_ddl, ledger_t0018_downgrade_ddl

revision = "t0018"
down_revision = "t0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with concurrently():
        for statement in ledger_t0018_ddl():
            op.execute(statement)


def downgrade() -> None:
    with concurrently():
        for statement in ledger_t0018_downgrade_ddl():
            op.execute(statement)
