"""A CLOSED wallet holds no money and never opens again, in the database.

Both rules lived only in `Wallet.closed` (wallet's domain): wallet's role, which may UPDATE
`wallets.status` (w0008), could set a wallet holding 700 to CLOSED, and set a CLOSED wallet
back to ACTIVE (review, 2026-12-05).

* CHECK `wallets_closed_with_zero_balance`: `status <> 'CLOSED' OR balance = 0`. Every
  writer's UPDATE of a row is checked: wallet's close, and transfer's money functions, which
  lock the row and refuse a CLOSED wallet before they change its balance. Added NOT VALID (a
  brief ACCESS EXCLUSIVE lock, no scan), then validated in a transaction of its own (Alembic's
  autocommit block), whose scan holds SHARE UPDATE EXCLUSIVE only: movements go on while it
  reads. A CLOSED wallet that holds money (a payout returned to a wallet closed before
  transfer's t0003) fails the validation, naming the constraint: the migration stops there,
  for staff to settle that money first; the NOT VALID constraint and the trigger stay (they
  check every later write), and the revision runs again from the start once it is fixed.
* Trigger `wallets_closed_is_final` (BEFORE UPDATE, WHEN the row was CLOSED and its new
  status is another): check_violation on the constraint name `wallets_closed_is_final`. Its
  function `wallet_refuse_reopen()` is owned by the owner, SECURITY INVOKER, and nobody else
  may EXECUTE it (a trigger fires without it).

Wallet's code makes neither change (WALLET_HAS_BALANCE, WALLET_CLOSED are decided before the
UPDATE, under the row lock); the database's refusal is a last line, not a new answer.

The downgrade drops the trigger, its function and the constraint.

Revision ID: w0011
Revises: w0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import concurrently, limit_lock_waits

revision = "w0011"
down_revision = "w0010"
branch_labels = None
depends_on = None

_CHECK = "wallets_closed_with_zero_balance"
_REOPEN = """
CREATE OR REPLACE FUNCTION wallet_refuse_reopen() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'wallet % is CLOSED: a closed wallet never opens again', OLD.id
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'wallets_closed_is_final',
              TABLE = TG_TABLE_NAME;
END
$$
"""
_TRIGGER = """
CREATE TRIGGER wallets_closed_is_final
    BEFORE UPDATE ON wallets
    FOR EACH ROW
    WHEN (OLD.status = 'CLOSED' AND NEW.status IS DISTINCT FROM 'CLOSED')
    EXECUTE FUNCTION wallet_refuse_reopen()
"""


def upgrade() -> None:
    # Each statement may run again: a validation that failed left the ones before it.
    limit_lock_waits()  # the trigger and the NOT VALID constraint lock `wallets` briefly
    op.execute(_REOPEN)
    op.execute("REVOKE EXECUTE ON FUNCTION wallet_refuse_reopen() FROM PUBLIC")
    op.execute("DROP TRIGGER IF EXISTS wallets_closed_is_final ON wallets")
    op.execute(_TRIGGER)
    op.execute(f"ALTER TABLE wallets DROP CONSTRAINT IF EXISTS {_CHECK}")
    op.execute(
        f"ALTER TABLE wallets ADD CONSTRAINT {_CHECK}"
        " CHECK (status <> 'CLOSED' OR balance = 0) NOT VALID"
    )
    with concurrently():
        op.execute(f"ALTER TABLE wallets VALIDATE CONSTRAINT {_CHECK}")


def downgrade() -> None:
    limit_lock_waits()  # as the upgrade: dropping takes the same strong lock
    op.execute("DROP TRIGGER wallets_closed_is_final ON wallets")
    op.execute("DROP FUNCTION wallet_refuse_reopen()")
    op.execute(f"ALTER TABLE wallets DROP CONSTRAINT {_CHECK}")
