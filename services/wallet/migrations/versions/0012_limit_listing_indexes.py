"""AdminListLimits pages on `position`: indexes for its filters in that order.

The listing was ordered on `(updated_at, position)`, which every change of an override moved
(SetMyLimit updates its row, AdminSetWalletLimits deleted and inserted the wallet's admin
rows): a row changed between two page fetches jumped above the cursor and was never listed.
It is now most recently created first on `position` alone, which a row keeps while it exists
(both writers update in place). Each filter reads a range of an index in that order:

* no filter: the primary key, backwards;
* a wallet (with or without the others): `wallet_limit_overrides_key` (at most six rows);
* `wallet_limit_overrides_source_idx` `(source, position)`, a source alone;
* `wallet_limit_overrides_action_idx` `(action, position)`, an action alone;
* `wallet_limit_overrides_source_action_idx` `(source, action, position)`, both.

Without them a sparse filter (a handful of ADMIN_OVERRIDE rows among every user's own
limits) walked the primary key row by row. `wallet_limit_overrides_recent_idx`
`(updated_at, position)` serves the old order only, and stays for now: a wallet of the
previous release, still running during a rolling update (or after a rollback), lists in that
order, and without it each of its pages would sort the whole filtered table (review of
2026-12-05: expand, then contract). A later revision drops it once no such wallet runs.

Built (and dropped) CONCURRENTLY, so limit changes and movement checks go on meanwhile: each
statement runs in Alembic's autocommit block. A build that failed leaves an INVALID index
behind; the DROP first makes running the migration again build it again. The downgrade
drops the three.

No grant: the indexes follow the table's.

Revision ID: w0012
Revises: w0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently

revision = "w0012"
down_revision = "w0011"
branch_labels = None
depends_on = None

_TABLE = "wallet_limit_overrides"
# name: definition, each in AdminListLimits' order (position DESC: read backwards).
_INDEXES = {
    "wallet_limit_overrides_source_idx": "(source, position)",
    "wallet_limit_overrides_action_idx": "(action, position)",
    "wallet_limit_overrides_source_action_idx": "(source, action, position)",
}


def upgrade() -> None:
    with concurrently():
        for name, definition in _INDEXES.items():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY {name} ON {_TABLE} {definition}")


def downgrade() -> None:
    with concurrently():
        for name in reversed(_INDEXES):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
