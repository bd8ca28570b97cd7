"""One pending submission per user, no longer one pending-or-approved: BASIC may be upgraded.

k0001's `kyc_submissions_one_open` (unique `user_id` where the status is PENDING or VERIFIED)
made an approval at KYC_TIER_BASIC final: the user could never ask for KYC_TIER_FULL (an
identity and address document, kyc_tier.proto). A user approved at BASIC may now submit again,
so a VERIFIED submission and a PENDING one (and later several VERIFIED ones) of one user must
coexist. The race-proof rule left to the database is one PENDING submission per user (two
simultaneous submissions store one); that a FULL grant blocks new submissions is the use
case's check, which no approval can race (an approval needs the pending submission that would
refuse the new one).

The downgrade restores k0001's index, and fails (unique violation) while any user has more
than one pending-or-approved submission: the upgrades would have to go first, which is not a
migration's decision to make.

Each index is built (and dropped) CONCURRENTLY, outside the revision's transaction
(`concurrently()`): as first shipped, a plain CREATE UNIQUE INDEX held SHARE on
`kyc_submissions` for the whole build (every submission and decision waiting) and a plain DROP
INDEX took ACCESS EXCLUSIVE on it (a later review). The new index is built before the old one
goes, so one of them holds the rule at every moment. A unique build that fails (the
downgrade's, on a user holding both) leaves an INVALID index that still refuses inserts
breaking it: the revision drops it before it gives up, and drops any left over (a migration
killed mid-build) before it builds again.

A run stopped part-way (the operator's interrupt, an evicted Job pod) leaves the version at
k0004, perhaps the new index valid already and the old one INVALID, not ready (its DROP INDEX
CONCURRENTLY stopped after a phase; a not-ready index enforces nothing) or gone. The next run
keeps a new index that is valid and ready (pg_index), builds none then, and drops only one that
is not, before its build; then it drops the old one. As first written it began by dropping the
new index whatever it was: while that drop or the new build waited behind a long reader, no
index held one pending submission per user, two submissions of one user could both be stored,
and the unique build then failed at every run (a later review). The downgrade does the same
with the two indexes swapped.

Revision ID: k0005
Revises: k0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from vaultpay_common.migrations import concurrently

revision = "k0005"
down_revision = "k0004"
branch_labels = None
depends_on = None

_ONE_PENDING = "kyc_submissions_one_pending"
_ONE_OPEN = "kyc_submissions_one_open"  # k0001's
_DEFINITIONS = {
    _ONE_PENDING: "ON kyc_submissions (user_id) WHERE status = 'PENDING'",
    _ONE_OPEN: "ON kyc_submissions (user_id) WHERE status IN ('PENDING', 'VERIFIED')",
}


# Whether the index named :name is whole (valid, ready and live: used, and enforcing its rule);
# no row when there is none. An interrupted CREATE or DROP INDEX CONCURRENTLY leaves it not.
_WHOLE = text(
    "SELECT i.indisvalid AND i.indisready AND i.indislive FROM pg_index AS i"
    " WHERE i.indexrelid = to_regclass(CAST(:name AS text))"
)


def _whole(index: str) -> bool | None:
    """True when `index` is there and whole, False when a part-built or part-dropped one is
    there, None when there is none. Rendered offline (the migration lint), False: the
    rendering then holds every statement the revision may send."""
    if op.get_context().as_sql:
        return False
    found = op.get_bind().execute(_WHOLE, {"name": index}).scalar()
    return None if found is None else bool(found)


def _build_then_drop(build: str, drop: str) -> None:
    """Builds the unique index `build` unless a whole one is there, then drops `drop`, each
    CONCURRENTLY. A `build` left over not whole is dropped first; a whole one is never."""
    with concurrently():
        # Migrations of one database take turns: nothing else changes `build` meanwhile.
        whole = _whole(build)
        if not whole:
            if whole is False:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {build}")
            try:
                op.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {build} {_DEFINITIONS[build]}")
            except Exception:
                # The failed build's INVALID index would go on refusing inserts that break it.
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {build}")
                raise
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {drop}")


def upgrade() -> None:
    _build_then_drop(_ONE_PENDING, _ONE_OPEN)


def downgrade() -> None:
    _build_then_drop(_ONE_OPEN, _ONE_PENDING)
