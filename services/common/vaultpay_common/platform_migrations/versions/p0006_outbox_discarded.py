"""An outbox event staff gave up for good is DISCARDED.

A dead letter could only be replayed: one the consumer refuses for good (a user that does not
exist, a notification wallet will never take) died again at once, stayed at the head of
`dead-letters` and was never cleared. `discard-dead-letter --event-id E --reason R` (every
service CLI with an outbox, audited as `outbox.dead_letter_discarded` with the operator and the
reason) sets it DISCARDED: relays claim PENDING events only, the listing and replays read DEAD
ones only, and the purge deletes DELIVERED ones only, so a discarded event is never delivered,
listed nor purged (vaultpay_common.outbox.sql).

The status CHECK `outbox_events_status_valid` allows it. The narrower CHECK is replaced by the
wider one NOT VALID in the revision's transaction (ACCESS EXCLUSIVE on `outbox_events` for a
catalogue change, with the migration's bounded lock wait: every movement and relay writes the
table), then validated in `concurrently()` (a scan under SHARE UPDATE EXCLUSIVE only). Each
statement may run again: a run stopped before the validation starts over.

The downgrade makes the discarded events dead letters again (the audit rows of the discards
stay) and brings p0002's CHECK back the same way.

Revision ID: p0006
Revises: p0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently, limit_lock_waits
from vaultpay_common.outbox import outbox_discarded_status_ddl, outbox_discarded_status_drop_ddl

revision = "p0006"
down_revision = "p0005"
branch_labels = None
depends_on = None


def _run(statements: list[str]) -> None:
    *in_transaction, validate = statements
    limit_lock_waits()  # the ALTERs lock `outbox_events` briefly
    for statement in in_transaction:
        op.execute(statement)
    with concurrently():
        op.execute(validate)


def upgrade() -> None:
    _run(outbox_discarded_status_ddl())


def downgrade() -> None:
    _run(outbox_discarded_status_drop_ddl())
