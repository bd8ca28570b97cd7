"""The retention of notifications: an index on their creation time, and DELETE for wallet's role.

* `notifications_created_idx`, `(created_at)`: the hourly cleanup deletes notifications older
  than the retention (`adapters.notification_retention_sql`, 180 days by default) in batches
  read from it, oldest first, without a scan. The inbox's own indexes
  (`notifications_user_created_idx`, `notifications_user_unread_idx`) lead with `user_id` and
  cannot serve a cut across every user.
* DELETE on `notifications` to wallet's role: w0002 gave none ("a retention job would get its
  own grant"); this is that job. The downgrade revokes it.

The index is built (and dropped) CONCURRENTLY, so the inbox is written while it builds: those
statements run in Alembic's autocommit block, after the grant's transaction. A build that
failed leaves an INVALID index behind; the DROP first makes running the migration again build
it again.

Revision ID: w0010
Revises: w0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.migrations import concurrently

revision = "w0010"
down_revision = "w0009"
branch_labels = None
depends_on = None

_INDEX = "notifications_created_idx"


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.execute(f'GRANT DELETE ON notifications TO "{app_role}"')
    with concurrently():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX}")
        op.execute(f"CREATE INDEX CONCURRENTLY {_INDEX} ON notifications (created_at)")


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    with concurrently():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_INDEX}")
    op.execute(f'REVOKE DELETE ON notifications FROM "{app_role}"')
