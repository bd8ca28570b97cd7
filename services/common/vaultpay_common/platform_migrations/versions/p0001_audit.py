"""The audit log of the shared `vaultpay` database: audit_events, audit_seals, their functions,
triggers and grants (vaultpay_common.audit).

Revision ID: p0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.audit import audit_ddl, audit_drop_ddl
from vaultpay_common.migrations import refuse_to_drop_rows

revision = "p0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    for statement in audit_ddl(app_role):
        op.execute(statement)


def downgrade() -> None:
    refuse_to_drop_rows("audit_events")
    for statement in audit_drop_ddl():
        op.execute(statement)
