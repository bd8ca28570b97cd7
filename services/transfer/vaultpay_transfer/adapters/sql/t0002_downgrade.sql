-- t0002's downgrade: the index comes back, built CONCURRENTLY outside the revision's
-- transaction (a plain CREATE INDEX holds SHARE on wallet_transactions, stopping every
-- movement, for the whole build); then functions_t0001.sql puts t0001's functions back, in the
-- revision's transaction. A build that failed leaves an INVALID index behind; the DROP first
-- makes running the downgrade again build it again.

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_ledger_idx;
CREATE INDEX CONCURRENTLY wallet_transactions_ledger_idx
    ON wallet_transactions (ledger_transaction_id);
