-- The plain-SQL transfer, seven statements: BEGIN; both wallets locked in id order (a
-- wallet's number follows its id), reading what the checks need; the check (sender active
-- with KYC and enough balance, recipient not closed); both balances; one INSERT writing the
-- ledger transaction, its two postings and both sides' wallet_transactions rows; COMMIT.
-- Runs on the bench_ref copies of the service's tables (same columns, indexes, constraints,
-- foreign keys and triggers, same wallets and balances).
BEGIN;
SELECT balance AS lo_balance,
       (status = 'ACTIVE' AND kyc_tier <> 'NONE')::int AS lo_may_send,
       (status <> 'CLOSED')::int AS lo_open
FROM bench_ref.wallets
WHERE id = (SELECT wallet_id FROM bench_ref.accounts WHERE n = :lo)
FOR UPDATE \gset
SELECT balance AS hi_balance,
       (status = 'ACTIVE' AND kyc_tier <> 'NONE')::int AS hi_may_send,
       (status <> 'CLOSED')::int AS hi_open
FROM bench_ref.wallets
WHERE id = (SELECT wallet_id FROM bench_ref.accounts WHERE n = :hi)
FOR UPDATE \gset
\if :s = :lo
\set ok :lo_may_send = 1 and :hi_open = 1 and :lo_balance >= :amount
\else
\set ok :hi_may_send = 1 and :lo_open = 1 and :hi_balance >= :amount
\endif
\if :ok
UPDATE bench_ref.wallets SET balance = balance - :amount
WHERE id = (SELECT wallet_id FROM bench_ref.accounts WHERE n = :s)
RETURNING balance AS s_after \gset
UPDATE bench_ref.wallets SET balance = balance + :amount
WHERE id = (SELECT wallet_id FROM bench_ref.accounts WHERE n = :r)
RETURNING balance AS r_after \gset
WITH s AS (
    SELECT w.id, w.user_id, w.display_name FROM bench_ref.wallets AS w
    WHERE w.id = (SELECT wallet_id FROM bench_ref.accounts WHERE n = :s)
), r AS (
    SELECT w.id, w.user_id, w.display_name FROM bench_ref.wallets AS w
    WHERE w.id = (SELECT wallet_id FROM bench_ref.accounts WHERE n = :r)
), m AS (
    INSERT INTO bench_ref.ledger_transactions (id, reference, kind, currency, amount, created_at)
    VALUES (gen_random_uuid(), public.transfer_new_reference(), 'P2P', 'INR', :amount::bigint,
            clock_timestamp())
    RETURNING id, reference, created_at
), p AS (
    INSERT INTO bench_ref.ledger_postings (ledger_transaction_id, account, currency, amount,
                                           created_at)
    SELECT m.id, s.id, 'INR', -(:amount::bigint), m.created_at FROM m, s
    UNION ALL
    SELECT m.id, r.id, 'INR', :amount::bigint, m.created_at FROM m, r
)
INSERT INTO bench_ref.wallet_transactions (
    id, ledger_transaction_id, reference, request_id, user_id, wallet_id, type, category,
    status, amount, currency, balance_after, counterparty_wallet_id, counterparty_name, note,
    created_at, completed_at)
SELECT gen_random_uuid(), m.id, m.reference, gen_random_uuid(), s.user_id, s.id, 'DEBIT',
       'P2P_SEND', 'COMPLETED', :amount::bigint, 'INR', :s_after::bigint, r.id,
       r.display_name, '', m.created_at, m.created_at
FROM m, s, r
UNION ALL
SELECT gen_random_uuid(), m.id, m.reference, NULL, r.user_id, r.id, 'CREDIT', 'P2P_RECEIVE',
       'COMPLETED', :amount::bigint, 'INR', :r_after::bigint, s.id, s.display_name, '',
       m.created_at, m.created_at
FROM m, s, r;
\else
-- A refusal (never expected: the wallets hold far more than a send) is no transfer: the
-- client aborts here (pgbench counts it, the bench reports it as an error), rather than commit
-- nothing and be counted as a transfer done.
\set refused 1 / 0
\endif
COMMIT;
