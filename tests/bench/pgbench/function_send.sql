-- The service's own ledger function, called directly: one statement, one round trip, the
-- whole SendMoney transaction (idempotency claim, both wallets locked in id order, status,
-- KYC, limits and balance checked, balances, postings, both rows, limit usage, idempotency
-- record, two outbox events) on the service's real tables. The floor of the stack's design:
-- everything SendMoney does but the PIN and IP checks, the RPC layers and Envoy. A refusal
-- (never expected: the wallets are funded, the limits raised) fails the transaction, its
-- outcome in the error ('invalid input syntax for type integer: "INSUFFICIENT_BALANCE"').
-- The key is SendMoney's own method (the ledger refuses another service's, t0010) under a
-- caller no real one can be ('pgbench:<client>'; users are UUIDs, services 'service:<name>'):
-- the bench counts these sends apart by it (tests.bench.transfer.PGBENCH_CALLER_PREFIX).
\set lock random(1, 9223372036854775806)
SELECT CASE WHEN t.outcome = 'OK' THEN 1 ELSE t.outcome::integer END AS ok
FROM transfer_send_money(
    'pgbench:' || :client_id::text, '/vaultpay.transfer.v1.TransferService/SendMoney',
    gen_random_uuid(),
    '0000000000000000000000000000000000000000000000000000000000000000', :lock,
    (SELECT user_id FROM bench_ref.accounts WHERE n = :s),
    (SELECT wallet_id FROM bench_ref.accounts WHERE n = :r),
    :amount, 'INR', '') AS t;
