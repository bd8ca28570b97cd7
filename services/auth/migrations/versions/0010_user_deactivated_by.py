"""Users get `deactivated_by`: which staff account deactivated the user (NULL: active, or not
known).

ReactivateUser asked only that the caller may manage the user: an admin could bring back a
moderator a super_admin had deactivated for fraud, staff powers and all (review of
2026-12-05). Wallet already refuses a lower rank lifting a higher rank's freeze
(FREEZE_HELD_BY_HIGHER_RANK); a deactivation is the stronger hold. The deactivator is now kept
on the user, and a reactivation by a rank below the deactivator's current one is refused
(DEACTIVATED_BY_HIGHER_RANK). Users deactivated before this migration have no deactivator on
record: only a super_admin reactivates them (DEACTIVATOR_UNKNOWN), as wallet does for a freeze
whose setter it does not know.

The column references `users` (a deactivator is a user); users are never deleted. Adding a
nullable column without a default rewrites nothing, but ALTER TABLE holds ACCESS EXCLUSIVE on
`users` until the revision commits: every login, refresh and GetUserRole waits meanwhile.
Written first as one `add_column` with its foreign key, the revision also checked that key (a
scan of every user) under that lock, for as long as the scan took; `limit_lock_waits()` bounds
the wait for the lock, not the time it is held (a later review). Now the column and the key,
NOT VALID (no scan), take the lock only for the catalogue changes, and the key is validated
after that commit, in a transaction of its own (`concurrently()`), whose scan holds SHARE
UPDATE EXCLUSIVE on `users`: reads and writes go on. Every value written meanwhile is checked
as it is written. Each step may run again (IF NOT EXISTS, the DROP first): a validation that
failed keeps the column and the key NOT VALID, and the revision runs again from the start. The
end schema is the one the first version made.

The downgrade drops the column and its key: the deactivators on record are lost, not backed up
(users deactivated before are then "deactivator unknown" again after an upgrade: only a
super_admin reactivates them).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently, limit_lock_waits

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_KEY = "users_deactivated_by_fkey"


def upgrade() -> None:
    limit_lock_waits()  # ALTER TABLE users: ACCESS EXCLUSIVE, for the catalogue changes only
    op.execute("ALTER TABLE users ADD COLUMN IF NOT EXISTS deactivated_by uuid")
    op.execute(f"ALTER TABLE users DROP CONSTRAINT IF EXISTS {_KEY}")
    op.execute(
        f"ALTER TABLE users ADD CONSTRAINT {_KEY}"
        " FOREIGN KEY (deactivated_by) REFERENCES users (id) NOT VALID"
    )
    with concurrently():  # the scan: SHARE UPDATE EXCLUSIVE, users are read and written
        op.execute(f"ALTER TABLE users VALIDATE CONSTRAINT {_KEY}")


def downgrade() -> None:
    """Drops the column and its key: the deactivators on record are lost (see above)."""
    limit_lock_waits()
    op.drop_column("users", "deactivated_by")
