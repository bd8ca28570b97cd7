-- Migration t0021's downgrade: transfer's role no longer reads `wallets.user_id` (a column-level
-- REVOKE: where one role serves wallet too, its grant of the whole table stays); the claim that
-- counts the bank calls goes; the downgrade then creates t0014's claim (read from
-- t0014_upgrade.sql) with its privileges, and puts t0014's lease, which counts the leases, back
-- over t0021's (adapters/ddl.py).
REVOKE SELECT (user_id) ON wallets FROM __APP_ROLE__;
DROP FUNCTION transfer_claim_payout_for_bank(uuid, timestamptz, double precision,
                                             double precision);
