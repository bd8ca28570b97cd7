-- Migration t0026's downgrade: the three constraints on a row's status and reversed amount go
-- (t0001's range and transition trigger stay).

ALTER TABLE wallet_transactions
    DROP CONSTRAINT IF EXISTS wallet_transactions_reversed_only_when_settled,
    DROP CONSTRAINT IF EXISTS wallet_transactions_reversed_status_in_full,
    DROP CONSTRAINT IF EXISTS wallet_transactions_completed_reversed_in_part;
