"""ListUsers' filters read indexes of their own: the staff, the deactivated, an email prefix.

ListUsers reads newest first (`created_at DESC, id DESC`, keyset-paginated). Its only index
was `users_created_idx` `(created_at, id)`: a filter by a staff role or by `active = false`
walked it back checking every user until it had a page (the whole table when the page was
short, and staff and deactivated users are few), and an email prefix (`LIKE 'prefix%'`) used
no index at all but under the "C" collation, and never in the generic plan of the prepared
statement (the pattern a bound parameter).

* `users_staff_created_idx`, `(created_at, id) WHERE role IN ('MODERATOR', 'ADMIN',
  'SUPER_ADMIN')`, and `users_inactive_created_idx`, `(created_at, id) WHERE NOT active`: the
  listing's order, the few rows of each filter. The repository states the predicates as
  literal SQL beside its bound filters, so a generic plan can use them too (the proof of a
  partial index's WHERE needs constants: `role = $1` implies nothing).
* `users_email_c_idx`, `(email COLLATE "C")`: the repository turns the prefix into a range
  of it in code point order, `prefix <= email < prefix with its last character incremented`,
  the same emails LIKE matched, whatever the database's collation.

Built (and dropped) CONCURRENTLY, so sign-ups, logins and staff changes of `users` go on while
they build: each statement runs in Alembic's autocommit block (a plain CREATE INDEX holds
SHARE on `users`, stopping every write, for the whole build), `concurrently()`, which lifts
the migration's lock_timeout for the block: a CONCURRENTLY build waits for older transactions
under lock_timeout too, and must not fail for them. A build that failed leaves an INVALID
index behind; the DROP first makes running the migration again build it again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The WHEREs must stay what SqlUserRepository.list states, word for word.
_INDEXES = {
    "users_staff_created_idx": (
        "ON users (created_at, id) WHERE role IN ('MODERATOR', 'ADMIN', 'SUPER_ADMIN')"
    ),
    "users_inactive_created_idx": "ON users (created_at, id) WHERE NOT active",
    "users_email_c_idx": 'ON users (email COLLATE "C")',
}


def upgrade() -> None:
    with concurrently():
        for name, definition in _INDEXES.items():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY {name} {definition}")


def downgrade() -> None:
    with concurrently():
        for name in reversed(_INDEXES):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
