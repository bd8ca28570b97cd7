"""The money functions, cheaper: every SQL-language helper becomes PL/pgSQL, transfer_caps
one statement on precomputed keys, and wallet_transactions_ledger_idx goes.

A SQL function called from a statement of another function is planned again at every call
(and its SET search_path keeps it from being inlined); PL/pgSQL keeps each statement's plan
for the session. transfer_caps was planned at every call and built its three setting keys
again for each settings row it read. Nothing a function reads, locks, checks, answers or
writes changes, nor its signature, owner or grants (CREATE OR REPLACE keeps them). The
functions come from `sql/functions.sql`, the index drop from `sql/t0002_upgrade.sql`; the
downgrade recreates the index and puts t0001's functions back (`sql/functions_t0001.sql`).

The index is dropped, and built again by the downgrade, CONCURRENTLY, outside the revision's
transaction (`concurrently()`): as first shipped, a plain DROP INDEX took ACCESS EXCLUSIVE on
`wallet_transactions` and a plain CREATE INDEX held SHARE on it for the whole build, every
movement waiting (a later review). The functions are replaced in the revision's transaction,
which the drop follows; both parts may run again.

Revision ID: t0002
Revises: t0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently
from vaultpay_transfer.adapters.ddl import (
    ledger_t0002_ddl,
    ledger_t0002_downgrade_ddl,
    ledger_t0002_downgrade_index_ddl,
    ledger_t0002_index_ddl,
)

revision = "t0002"
down_revision = "t0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0002_ddl():
        op.execute(statement)
    with concurrently():
        for statement in ledger_t0002_index_ddl():
            op.execute(statement)


def downgrade() -> None:
    with concurrently():
        for statement in ledger_t0002_downgrade_index_ddl():
            op.execute(statement)
    for statement in ledger_t0002_downgrade_ddl():
        op.execute(statement)
