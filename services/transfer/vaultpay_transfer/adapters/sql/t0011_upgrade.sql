-- Migration t0011: a payout of a wallet that staff froze is held, not paid out.
--
-- Withdraw moves the money into payouts-in-flight at once; the payout worker leases the payout,
-- asks the bank, then settles or returns it. Nothing of that looked at the wallet, so a wallet
-- an admin froze after the withdrawal was accepted was still paid out a second later. The
-- worker now calls transfer_hold_payout_if_frozen for each leased payout just before it asks
-- the bank: under the payout's row lock, then the wallet's (the order transfer_return_payout
-- takes them; nothing locks a wallet and then a payout), it reads the wallet's status and
-- freezes. A staff freeze in force (source ADMIN, no until-time or one still ahead), or a
-- FROZEN status with no freeze row to explain it (counted frozen, as transfer_is_frozen
-- counts it), holds the payout: it stays PENDING with its money in payouts-in-flight, is due
-- again after p_hold_seconds, and the lease's attempt is given back (the bank was not asked).
-- A self-freeze or a PIN lockout does not hold it: they stop new movements, and this
-- withdrawal was accepted (with the PIN) before them. `held_since` tells a payout newly held
-- from one still held, so the worker logs a hold once, and its release once.
--
-- Answers: CLEAR (ask the bank), RELEASED (ask the bank; it was held until now), HELD (newly
-- held), STILL_HELD, FINISHED (settled or returned already: nothing to ask), NOT_FOUND.

-- ACCESS EXCLUSIVE on payouts, for the catalogue change only (a nullable column without a
-- default rewrites nothing); the wait for it is bounded by the migration's lock_timeout
-- (vaultpay_common.migrations.run_env), so it gives up instead of queueing the payout worker
-- and every withdrawal behind a long transaction.
ALTER TABLE payouts ADD COLUMN held_since timestamptz;

CREATE FUNCTION transfer_hold_payout_if_frozen(
    p_transaction_id uuid, p_hold_seconds double precision
) RETURNS text
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    p record;
    v_status text;
    v_now timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO p FROM payouts WHERE payouts.transaction_id = p_transaction_id FOR UPDATE;
    IF NOT FOUND THEN RETURN 'NOT_FOUND'; END IF;
    IF p.status <> 'PENDING' THEN RETURN 'FINISHED'; END IF;
    -- FOR SHARE waits for a freeze in progress (wallet updates the row under FOR UPDATE), and
    -- the freezes are read by the next statement, after it: a freeze committed before is seen.
    SELECT w.status INTO v_status FROM wallets AS w WHERE w.id = p.wallet_id FOR SHARE;
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
        WHERE payouts.transaction_id = p_transaction_id;
        RETURN CASE WHEN p.held_since IS NULL THEN 'HELD' ELSE 'STILL_HELD' END;
    END IF;
    IF p.held_since IS NOT NULL THEN
        UPDATE payouts SET held_since = NULL WHERE payouts.transaction_id = p_transaction_id;
        RETURN 'RELEASED';
    END IF;
    RETURN 'CLEAR';
END
$$;

REVOKE ALL ON FUNCTION transfer_hold_payout_if_frozen(uuid, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION transfer_hold_payout_if_frozen(uuid, double precision)
TO __APP_ROLE__;
