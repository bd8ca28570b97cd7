-- Migration t0026: which statuses carry a reversed amount.
--
-- t0001 keeps reversed_amount within [0, amount] (wallet_transactions_reversed_in_range) and
-- its transition trigger (protect.sql, transfer_check_transaction_change) keeps a row's status
-- on PENDING -> COMPLETED | FAILED, COMPLETED -> REVERSED and its reversed amount from
-- shrinking; nothing tied the status to the reversed amount, and the trigger never looks at an
-- INSERT. As the owner, whom the SECURITY DEFINER money functions run as, a FAILED withdrawal
-- took reversed_amount = 100 and a COMPLETED row became REVERSED with reversed_amount = 0
-- (review, 2026-12-05). Refunds and reversals are not written yet: the first one would have
-- been held to nothing.
--
-- The contract (transfer.proto, TransactionStatus REVERSED and Transaction.reversed_amount):
-- a row's reversed amount is what later refunds and reversals returned of it; REVERSED is
-- "fully refunded or reversed", and a partial one stays COMPLETED. So, for every writer and
-- every INSERT and UPDATE:
--   * only a settled row (COMPLETED, REVERSED) carries a reversed amount: a PENDING or FAILED
--     one moved no money that could be given back;
--   * a REVERSED row is reversed in full;
--   * a COMPLETED row is reversed at most in part (reversed in full, it is REVERSED).
-- With t0001's range and the trigger, the last two make a settled row REVERSED exactly when
-- its reversed amount is its amount: a refund or reversal that returns the rest sets the
-- status in the same UPDATE.
--
-- Every row written so far has reversed_amount = 0 and no status REVERSED (nothing writes
-- either yet), so the validations find nothing. Each constraint is added NOT VALID here (a
-- brief ACCESS EXCLUSIVE lock, no scan), in the revision's transaction; each validation runs
-- after it, in a transaction of its own (Alembic's autocommit block: the statements below
-- the first), whose scan holds SHARE UPDATE EXCLUSIVE only, so movements go on while it
-- reads. A row that breaks one fails its validation, naming the constraint: the migration
-- stops there with the constraints in place NOT VALID (every later write is checked), and the
-- revision runs again from the start once the row is put right (the DROPs make it repeatable).
--
-- The downgrade (t0026_downgrade.sql) drops the three constraints.

ALTER TABLE wallet_transactions
    DROP CONSTRAINT IF EXISTS wallet_transactions_reversed_only_when_settled,
    DROP CONSTRAINT IF EXISTS wallet_transactions_reversed_status_in_full,
    DROP CONSTRAINT IF EXISTS wallet_transactions_completed_reversed_in_part,
    ADD CONSTRAINT wallet_transactions_reversed_only_when_settled
        CHECK (reversed_amount = 0 OR status IN ('COMPLETED', 'REVERSED')) NOT VALID,
    ADD CONSTRAINT wallet_transactions_reversed_status_in_full
        CHECK (status <> 'REVERSED' OR reversed_amount = amount) NOT VALID,
    ADD CONSTRAINT wallet_transactions_completed_reversed_in_part
        CHECK (status <> 'COMPLETED' OR reversed_amount < amount) NOT VALID;

ALTER TABLE wallet_transactions VALIDATE CONSTRAINT wallet_transactions_reversed_only_when_settled;
ALTER TABLE wallet_transactions VALIDATE CONSTRAINT wallet_transactions_reversed_status_in_full;
ALTER TABLE wallet_transactions VALIDATE CONSTRAINT wallet_transactions_completed_reversed_in_part;
