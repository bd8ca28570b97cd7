"""The audit listing's action filter reads an index of its own: `(action, sequence)`.

ListAuditEvents filtered by action walked auth's audit log newest first until it had a page
(the whole table when no row matched): the log indexes actor and target in the listing's
order, not action. The same index the platform's audit log gets from p0004
(vaultpay_common.audit, `sql/action_index.sql`).

Built (and dropped) CONCURRENTLY, so logins and staff actions go on appending while it builds:
the statements run in Alembic's autocommit block.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.audit import audit_action_index_ddl, audit_action_index_drop_ddl
from vaultpay_common.migrations import concurrently

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with concurrently():
        for statement in audit_action_index_ddl():
            op.execute(statement)


def downgrade() -> None:
    with concurrently():
        for statement in audit_action_index_drop_ddl():
            op.execute(statement)
