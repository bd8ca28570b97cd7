"""A wallet-side row carries a reversed amount only once settled, and REVERSED means in full.

t0001 keeps `wallet_transactions.reversed_amount` within `[0, amount]`, and its transition
trigger keeps the status on its transitions (PENDING -> COMPLETED | FAILED, COMPLETED ->
REVERSED) and the reversed amount from shrinking; nothing tied the two together, and the
trigger never looks at an INSERT. As the owner (whom the money functions run as), a FAILED
withdrawal took a reversed amount of 100 and a COMPLETED row became REVERSED with nothing
reversed (review, 2026-12-05). Refunds and reversals are not written yet: the first one would
have been held to nothing. The proto's rule (TransactionStatus REVERSED: "fully refunded or
reversed", partial ones stay COMPLETED) is now three CHECKs, for every writer:

* `wallet_transactions_reversed_only_when_settled`: `reversed_amount = 0 OR status IN
  ('COMPLETED', 'REVERSED')`;
* `wallet_transactions_reversed_status_in_full`: `status <> 'REVERSED' OR reversed_amount =
  amount`;
* `wallet_transactions_completed_reversed_in_part`: `status <> 'COMPLETED' OR reversed_amount
  < amount`.

Added NOT VALID (a brief ACCESS EXCLUSIVE lock, no scan) in the revision's transaction, then
each validated in a transaction of its own (Alembic's autocommit block), whose scan holds SHARE
UPDATE EXCLUSIVE only: movements go on while it reads. No row written so far breaks them
(nothing sets a reversed amount or REVERSED yet). One that does fails its validation, naming
the constraint: the migration stops there, the NOT VALID constraints check every later write,
and the revision runs again from the start once the row is put right. SQL in
`sql/t0026_upgrade.sql`; the downgrade (`sql/t0026_downgrade.sql`) drops the three.

Revision ID: t0026
Revises: t0025
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently, limit_lock_waits
from vaultpay_transfer.adapters.ddl import (
    ledger_t0026_ddl,
    ledger_t0026_downgrade_ddl,
    ledger_t0026_validate_ddl,
)

revision = "t0026"
down_revision = "t0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    limit_lock_waits()  # the NOT VALID constraints lock `wallet_transactions` briefly
    for statement in ledger_t0026_ddl():
        op.execute(statement)
    with concurrently():
        for statement in ledger_t0026_validate_ddl():
            op.execute(statement)


def downgrade() -> None:
    limit_lock_waits()  # as the upgrade: dropping takes the same strong lock
    for statement in ledger_t0026_downgrade_ddl():
        op.execute(statement)
