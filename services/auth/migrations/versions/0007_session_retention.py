"""Ended sessions and their refresh tokens are deleted once old enough (they were kept forever).

* `sessions_ended_idx` on `least(expires_at, revoked_at)`, when a session ended: the cleanup
  job (`vaultpay_auth.adapters.retention`) reads the oldest ended sessions from it, in order.
* `sessions_live_user_idx` on `user_id` of the sessions not revoked: revoking every session
  of a user (password change, role change, deactivation, the CLI) reads only those, not every
  session the user ever had.
* The app role may DELETE from `sessions` and `refresh_tokens` (the cleanup job).

Built (and dropped) CONCURRENTLY, so sign-ins and refreshes go on while they build: outside a
transaction, in Alembic's autocommit block, after the grant has committed. A build that failed
leaves an INVALID index behind; the DROP first makes running the migration again build it
again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.migrations import concurrently

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_INDEXES = {
    # The expression must stay what the cleanup job's statements compare, word for word.
    "sessions_ended_idx": "ON sessions ((least(expires_at, revoked_at)))",
    "sessions_live_user_idx": "ON sessions (user_id) WHERE revoked_at IS NULL",
}


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.execute(f'GRANT DELETE ON sessions, refresh_tokens TO "{app_role}"')
    with concurrently():
        for name, definition in _INDEXES.items():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY {name} {definition}")


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    with concurrently():
        for name in _INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute(f'REVOKE DELETE ON sessions, refresh_tokens FROM "{app_role}"')
