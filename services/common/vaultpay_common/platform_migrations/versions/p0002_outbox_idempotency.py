"""The shared vaultpay database's outbox and idempotency records.

Both tables are written by every service of the database in the same transaction as its
change; the statements live next to the code that uses them (the integration tests run
the very same ones).

Revision ID: p0002
Revises: p0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.idempotency import idempotency_table_ddl, idempotency_table_drop_ddl
from vaultpay_common.migrations import refuse_to_drop_rows
from vaultpay_common.outbox import outbox_table_ddl, outbox_table_drop_ddl

revision = "p0002"
down_revision = "p0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = str(context.config.attributes["app_role"])
    for statement in (*idempotency_table_ddl(app_role), *outbox_table_ddl(app_role)):
        op.execute(statement)


def downgrade() -> None:
    refuse_to_drop_rows("outbox_events", "idempotency_records")
    for statement in (*outbox_table_drop_ddl(), *idempotency_table_drop_ddl()):
        op.execute(statement)
