"""A limit's refusal tells the time it was decided at.

`transfer_send_money`, `transfer_top_up` and `transfer_withdraw` judge a movement's limits by
the database's clock, read under the wallet's row lock (t0012); the service told the client
when to retry (the window's end, midnight Asia/Kolkata) from its own clock, read after the
reply, so a refusal decided just before midnight and timed by the service just after it said
to wait a whole day, and a service host whose clock differs from the database's described
another window. A refusal of `transfer_limit_refusal` now also carries `decided_at`, the
movement's time, and the service takes the window and the wait from it (without it, from its
own clock: an older service ignores the key, a newer one copes without it). Only the refusal
branch changes. SQL in `sql/t0016_upgrade.sql`; the downgrade puts t0012's three back (read
from `sql/t0012_upgrade.sql`). CREATE OR REPLACE: owners and privileges stay.

Revision ID: t0016
Revises: t0015
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0016_ddl, ledger_t0016_downgrade_ddl

revision = "t0016"
down_revision = "t0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0016_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0016_downgrade_ddl():
        op.execute(statement)
