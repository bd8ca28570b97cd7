"""A user made active again forgets who deactivated them, whoever's code did it.

0010 keeps the deactivator on the user (`users.deactivated_by`), written and cleared by auth's
code since then. Auth from before 0010, still running during a rolling update (or after a
rollback), neither writes nor clears it: its reactivation left the old deactivator on the
row, and a later deactivation by it (a super_admin's, say) kept that stale name, so an admin
could lift a super_admin's deactivation as if the admin's earlier one were in force
(review of 2026-12-05). A BEFORE UPDATE trigger clears the column whenever a row is or becomes
active: an older auth's reactivation clears it, and its later deactivation then records no
deactivator, which only a super_admin lifts (DEACTIVATOR_UNKNOWN), the safe side.

The downgrade drops the trigger and its function.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import limit_lock_waits

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    limit_lock_waits()  # CREATE TRIGGER on users: SHARE ROW EXCLUSIVE, briefly
    op.execute(
        """
        CREATE FUNCTION users_active_has_no_deactivator() RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
        BEGIN
            NEW.deactivated_by := NULL;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_active_has_no_deactivator
            BEFORE INSERT OR UPDATE ON users
            FOR EACH ROW
            WHEN (NEW.active AND NEW.deactivated_by IS NOT NULL)
            EXECUTE FUNCTION users_active_has_no_deactivator()
        """
    )


def downgrade() -> None:
    limit_lock_waits()
    op.execute("DROP TRIGGER users_active_has_no_deactivator ON users")
    op.execute("DROP FUNCTION users_active_has_no_deactivator()")
