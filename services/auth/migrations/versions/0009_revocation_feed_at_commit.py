"""A revocation enters the feed when its transaction commits, not when its UPDATE ran.

The feed row (`session_revocations`) was written by a plain AFTER UPDATE trigger, so its
`recorded_at` (clock_timestamp) was the time of the revoking statement. Readers look back 20
minutes by `recorded_at`: a revocation whose transaction stayed open longer than that (an
operator's `BEGIN; UPDATE sessions SET revoked_at = ...` committed 25 minutes later: psql has
no idle-in-transaction bound, the services' sessions do) entered the table already outside
every reader's window, fresh cursors included, and was never delivered: wallet, transfer and
kyc went on honouring the session's tokens, strict calls included (the feed was fresh and
silent about it), while auth refused them (review of 2026-12-05).

The trigger is now a constraint trigger, DEFERRABLE INITIALLY DEFERRED: it fires at COMMIT,
so the row (and its NOTIFY, which PostgreSQL delivers at commit anyway) is written, and
stamped, as the transaction commits, in the same transaction. The function is unchanged, and
so is which updates fire it (revoked_at set from NULL). Nothing reads the feed table inside
a revoking transaction.

The downgrade puts back the plain trigger.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import limit_lock_waits

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TRIGGER = """
CREATE {kind}TRIGGER sessions_feed_revocation
    AFTER UPDATE OF revoked_at ON sessions{timing}
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION sessions_feed_revocation()
"""


def upgrade() -> None:
    limit_lock_waits()  # the trigger's replacement locks `sessions` briefly
    op.execute("DROP TRIGGER sessions_feed_revocation ON sessions")
    op.execute(_TRIGGER.format(kind="CONSTRAINT ", timing="\n    DEFERRABLE INITIALLY DEFERRED"))


def downgrade() -> None:
    limit_lock_waits()
    op.execute("DROP TRIGGER sessions_feed_revocation ON sessions")
    op.execute(_TRIGGER.format(kind="", timing=""))
