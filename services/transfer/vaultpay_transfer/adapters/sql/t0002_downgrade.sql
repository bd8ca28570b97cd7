-- t0002's downgrade, run before functions_t0001.sql puts t0001's functions back.

CREATE INDEX wallet_transactions_ledger_idx ON wallet_transactions (ledger_transaction_id);
