-- Migration t0004: the payout worker's lease finds the payouts it leased by their key.
--
-- PostgreSQL 15 plans a LANGUAGE sql function's statement without its arguments' values, so
-- `LIMIT p_limit` is guessed as a tenth of the due payouts the statistics saw. After a backlog
-- (statistics taken while many payouts were pending), t0002's `transaction_id IN (subquery)`
-- was planned as a hash join reading the whole payouts table, every round of the worker
-- (once a second). Here the leased ids come back as one array from the same locking subquery
-- (an InitPlan), and the UPDATE finds each by the primary key whatever the guess. The same
-- payouts are locked and leased, with the same answer.

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
    WHERE p.transaction_id = ANY (ARRAY(
        SELECT d.transaction_id FROM payouts AS d
        WHERE d.status = 'PENDING' AND d.available_at <= clock_timestamp()
        ORDER BY d.available_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED))
    RETURNING p.transaction_id, p.account_hash, p.amount, p.currency, p.attempts
$$;
