"""kyc's role updates only the columns of the key tables that kyc changes.

k0001 granted UPDATE on the whole of `kyc_keys` and `kyc_key_rotations`: kyc's role (a kyc
bug, or whoever holds its credentials) could rename a key (every submission wrapped under it
unreadable), move a rotation's `from_key_id`/`to_key_id` or its `started_by` (the audit of who
rotated what) after the fact. Deny by default, as k0006 did for `kyc_submissions`: the
table-level UPDATE is revoked and UPDATE granted on what kyc's code writes:

* `kyc_keys`: `state`, `retiring_since` (`SqlKeyRepository.activate` retires the active key);
  its INSERT (a new key) and DELETE (an unused retiring key) stay;
* `kyc_key_rotations`: `reencrypted_count` (`add_rewrapped`) and `finished_at`
  (`finish_rotations`).

`SELECT ... FOR KEY SHARE` of a key row (a submission holds the active key while it writes)
needs UPDATE of one column only, which `state` gives. The downgrade gives back the
table-level UPDATE (revoking it drops the column grants too).

Revision ID: k0007
Revises: k0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import context, op

revision = "k0007"
down_revision = "k0006"
branch_labels = None
depends_on = None

# What SqlKeyRepository writes (keys_sql.py); keep the two in step.
UPDATABLE_COLUMNS = {
    "kyc_keys": ("state", "retiring_since"),
    "kyc_key_rotations": ("reencrypted_count", "finished_at"),
}


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    for table, columns in UPDATABLE_COLUMNS.items():
        op.execute(f'REVOKE UPDATE ON {table} FROM "{app_role}"')
        op.execute(f'GRANT UPDATE ({", ".join(columns)}) ON {table} TO "{app_role}"')


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    for table in UPDATABLE_COLUMNS:
        # A table's REVOKE takes its columns' grants of the same privilege with it.
        op.execute(f'REVOKE UPDATE ON {table} FROM "{app_role}"')
        op.execute(f'GRANT UPDATE ON {table} TO "{app_role}"')
