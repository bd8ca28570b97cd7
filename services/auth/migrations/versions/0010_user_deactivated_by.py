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
nullable column without a default rewrites nothing; the foreign key's check reads the table
under a SHARE ROW EXCLUSIVE lock, so the lock wait is bounded.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from vaultpay_common.migrations import limit_lock_waits

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    limit_lock_waits()  # ALTER TABLE users: ACCESS EXCLUSIVE, briefly
    op.add_column(
        "users",
        sa.Column(
            "deactivated_by",
            UUID(as_uuid=False),
            sa.ForeignKey("users.id", name="users_deactivated_by_fkey"),
        ),
    )


def downgrade() -> None:
    limit_lock_waits()
    op.drop_column("users", "deactivated_by")
