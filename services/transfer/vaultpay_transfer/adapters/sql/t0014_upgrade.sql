-- Migration t0014: the payout lease is fenced.
--
-- The worker leases a batch of payouts (transfer_lease_payouts) and then, one payout after the
-- other, checks each for a staff freeze (t0011's transfer_hold_payout_if_frozen) and asks the
-- bank. Nothing tied the check to the lease: a payout whose lease ran out while the worker was
-- still busy with the batch was leased again by another worker, the first worker's check still
-- answered CLEAR, and both asked the bank for it. A stale worker's HELD also moved the payout's
-- due time and gave an attempt back, cutting short the live worker's lease.
--
-- The lease now also returns its end, `lease_until` (the available_at it set): the fencing
-- value. A new type of result cannot be given by CREATE OR REPLACE, so the function is dropped
-- and created again; the new function gets its owner from the migration's role and no
-- privileges, so they are given as protect.sql gave them (t0007 moved them to __APP_ROLE__).
-- Its attributes are this statement's (SECURITY DEFINER, VOLATILE, the pinned search_path, as
-- before). Otherwise t0013's function, byte for byte, but for the RETURNING's one more column.
--
-- transfer_claim_payout_for_bank replaces transfer_hold_payout_if_frozen (dropped: the worker
-- was its only caller). Under the payout's row lock, then the wallet's (FOR SHARE, t0011's
-- order), it answers:
--   NOT_FOUND, FINISHED (settled or returned already) as t0011 did;
--   LEASE_LOST when the payout is PENDING but its available_at is not p_lease_until (another
--     worker leased it since, or a hold moved it): nothing is changed, the caller skips it;
--   HELD / STILL_HELD as t0011 did (a staff freeze in force: due again after p_hold_seconds,
--     the lease's attempt given back);
--   CLEAR / RELEASED (ask the bank) after renewing the lease for the bank call: available_at
--     becomes clock_timestamp() + p_bank_seconds, or stays where it is if that is later (the
--     lease backs off with the attempts, t0013: a failed bank call is retried after the longer
--     of the two). A worker that waited in its batch still holds the payout through the call.
-- lease_until is the payout's available_at as the call leaves it (NULL for NOT_FOUND and
-- FINISHED); the time of a hold or a renewal is read after the locks are taken.

DROP FUNCTION transfer_lease_payouts(integer, double precision);

CREATE FUNCTION transfer_lease_payouts(
    p_limit integer, p_lease_seconds double precision
)
RETURNS TABLE (transaction_id uuid, account_hash text, amount bigint, currency text,
               attempts integer, lease_until timestamptz)
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
    RETURNING p.transaction_id, p.account_hash, p.amount, p.currency, p.attempts, p.available_at
$$;

REVOKE ALL ON FUNCTION transfer_lease_payouts(integer, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION transfer_lease_payouts(integer, double precision) TO __APP_ROLE__;

DROP FUNCTION transfer_hold_payout_if_frozen(uuid, double precision);

CREATE FUNCTION transfer_claim_payout_for_bank(
    p_transaction_id uuid, p_lease_until timestamptz, p_hold_seconds double precision,
    p_bank_seconds double precision
) RETURNS TABLE (answer text, lease_until timestamptz)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    p record;
    v_status text;
    v_now timestamptz;
BEGIN
    SELECT * INTO p FROM payouts WHERE payouts.transaction_id = p_transaction_id FOR UPDATE;
    IF NOT FOUND THEN answer := 'NOT_FOUND'; RETURN NEXT; RETURN; END IF;
    IF p.status <> 'PENDING' THEN answer := 'FINISHED'; RETURN NEXT; RETURN; END IF;
    IF p.available_at IS DISTINCT FROM p_lease_until THEN
        answer := 'LEASE_LOST'; lease_until := p.available_at; RETURN NEXT; RETURN;
    END IF;
    -- FOR SHARE waits for a freeze in progress (wallet updates the row under FOR UPDATE), and
    -- the freezes are read by the next statement, after it: a freeze committed before is seen.
    SELECT w.status INTO v_status FROM wallets AS w WHERE w.id = p.wallet_id FOR SHARE;
    v_now := clock_timestamp();
    IF v_status = 'FROZEN' AND (
        EXISTS (SELECT 1 FROM wallet_freezes AS f
                WHERE f.wallet_id = p.wallet_id AND f.source = 'ADMIN'
                  AND (f.until IS NULL OR f.until > now()))
        OR NOT EXISTS (SELECT 1 FROM wallet_freezes AS f WHERE f.wallet_id = p.wallet_id))
    THEN
        UPDATE payouts
        SET available_at = v_now + make_interval(secs => p_hold_seconds),
            attempts = greatest(payouts.attempts - 1, 0),
            held_since = coalesce(payouts.held_since, v_now)
        WHERE payouts.transaction_id = p_transaction_id
        RETURNING payouts.available_at INTO lease_until;
        answer := CASE WHEN p.held_since IS NULL THEN 'HELD' ELSE 'STILL_HELD' END;
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE payouts
    SET available_at = greatest(payouts.available_at,
                                v_now + make_interval(secs => p_bank_seconds)),
        held_since = NULL
    WHERE payouts.transaction_id = p_transaction_id
    RETURNING payouts.available_at INTO lease_until;
    answer := CASE WHEN p.held_since IS NULL THEN 'CLEAR' ELSE 'RELEASED' END;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION
    transfer_claim_payout_for_bank(uuid, timestamptz, double precision, double precision)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    transfer_claim_payout_for_bank(uuid, timestamptz, double precision, double precision)
TO __APP_ROLE__;
