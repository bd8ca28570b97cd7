-- t0004's downgrade: the payout lease as t0002 made it (functions.sql).

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
        available_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
    WHERE p.transaction_id IN (
        SELECT d.transaction_id FROM payouts AS d
        WHERE d.status = 'PENDING' AND d.available_at <= clock_timestamp()
        ORDER BY d.available_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED)
    RETURNING p.transaction_id, p.account_hash, p.amount, p.currency, p.attempts
$$;
