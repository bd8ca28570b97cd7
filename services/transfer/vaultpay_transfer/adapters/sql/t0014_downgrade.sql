-- Migration t0014's downgrade: the fenced claim and the lease with its fencing value go; the
-- downgrade then creates t0013's lease (read from t0013_upgrade.sql) with its privileges and
-- t0011's hold check (read from t0011_upgrade.sql) with its own (adapters/ddl.py).
DROP FUNCTION transfer_claim_payout_for_bank(uuid, timestamptz, double precision,
                                             double precision);
DROP FUNCTION transfer_lease_payouts(integer, double precision);
