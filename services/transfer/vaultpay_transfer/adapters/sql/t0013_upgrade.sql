-- Migration t0013: the payout lease backs off with the payout's attempts.
--
-- t0004's lease made every lease p_lease_seconds long, so a payout whose bank call kept
-- failing (the bank unreachable: the worker records nothing and waits for the lease to run out)
-- was leased again every lease period (60 s) forever. Its lease is now p_lease_seconds *
-- 2^least(attempts, 6), where attempts is the count before this lease (the SET's p.attempts is
-- the row's old value): 60 s, 120 s, 240 s ... up to 64 times the lease (about 64 minutes at
-- 60 s), then that. A payout the bank settles (or returns) is finished within its lease, by the
-- same worker, so a longer lease on a later attempt delays nothing but a retry after a failure.
-- A held payout does not back off: transfer_hold_payout_if_frozen (t0011) gives the lease's
-- attempt back, so its next lease is as long as the one it was held under. Otherwise t0004's
-- function, byte for byte; CREATE OR REPLACE keeps its owner and privileges, and its other
-- attributes are this statement's (it restates SECURITY DEFINER and the pinned search_path).
-- The downgrade puts t0004's back (read from t0004_upgrade.sql).

CREATE OR REPLACE FUNCTION transfer_lease_payouts(
    p_limit integer, p_lease_seconds double precision
)
RETURNS TABLE (transaction_id uuid, account_hash text, amount bigint, currency text,
               attempts integer)
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    UPDATE payouts AS p
    SET attempts = p.attempts + 1,
        available_at = clock_timestamp()
            + make_interval(secs => p_lease_seconds * power(2, least(p.attempts, 6)))
    WHERE p.transaction_id = ANY (ARRAY(
        SELECT d.transaction_id FROM payouts AS d
        WHERE d.status = 'PENDING' AND d.available_at <= clock_timestamp()
        ORDER BY d.available_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED))
    RETURNING p.transaction_id, p.account_hash, p.amount, p.currency, p.attempts
$$;
