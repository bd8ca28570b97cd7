"""The revocation feed wakes held polls: the revoking transaction NOTIFYs at COMMIT.

PollSessionRevocations may hold a poll that has nothing new (`wait`); auth LISTENs on
`vaultpay_auth_session_revocations` (vaultpay_auth.adapters.revocations.PgRevocationNotices)
and answers held polls as soon as a revocation commits. The notice carries nothing: a poll is
always answered from a read of the table. PostgreSQL folds identical notices of one
transaction into one, so a revocation of many sessions wakes the polls once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION sessions_feed_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_revocations (session_id, user_id, revoked_at, reason)
    VALUES (NEW.id, NEW.user_id, NEW.revoked_at, NEW.revoke_reason);{notify}
    RETURN NULL;
END;
$$
"""
_NOTIFY = """
    PERFORM pg_notify('vaultpay_auth_session_revocations', '');"""


def upgrade() -> None:
    op.execute(_FUNCTION.format(notify=_NOTIFY))


def downgrade() -> None:
    op.execute(_FUNCTION.format(notify=""))
