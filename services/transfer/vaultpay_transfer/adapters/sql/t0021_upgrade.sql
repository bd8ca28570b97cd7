-- Migration t0021: a payout's attempts count its bank calls, not its leases.
--
-- transfer_lease_payouts (t0013, t0014) added one to `attempts` on every lease and leased the
-- payout for p_lease_seconds * 2^least(attempts, 6); the payout worker alerts from the 7th
-- attempt ("an operator should look at the bank side"). A lease does not ask the bank: a
-- payout leased and then lost before the worker reached it (LEASE_LOST: its lease ran out in a
-- long batch and another worker leased it), or whose claim failed on a database error, gained
-- an attempt all the same, so its next lease doubled and it climbed to the alert without the
-- bank ever failing; one then held by a worker that crashed waited up to 64 leases.
--
-- The lease now counts nothing: it leases the payout for p_lease_seconds *
-- 2^least(attempts, 6), attempts being the bank calls made so far (60 s, then 120 s after one
-- failed call, ... up to 64 times). Otherwise t0014's lease, byte for byte; its type of result
-- is t0014's, so CREATE OR REPLACE keeps its owner and privileges, and its attributes are
-- restated (SECURITY DEFINER, the pinned search_path).
--
-- transfer_claim_payout_for_bank counts the attempt where the bank is asked: its CLEAR and
-- RELEASED (the caller asks the bank next) add one to `attempts`, in the same UPDATE that
-- renews the lease for the call, and return the count (this call included) as `attempts`, for
-- the worker's alert; NOT_FOUND, FINISHED, LEASE_LOST, HELD and STILL_HELD change no attempt
-- and return NULL there (a hold no longer gives an attempt back: the lease took none). A new
-- type of result cannot be given by CREATE OR REPLACE, so the claim is dropped and created
-- again, with its privileges given again as t0014 gave them. Otherwise t0014's claim: the
-- same locks in the same order, the same fence, the same hold and renewal.
--
-- Transfer's role may also read `wallets.user_id` (t0007 granted id, status, currency and
-- balance only): the ledger verifier's `history_rows_owned_by_wallet_owner` compares each
-- wallet_transactions row's user_id, by which ListTransactions and GetTransaction find it,
-- with its wallet's owner. Read only, as the other columns.
--
-- The downgrade (t0021_downgrade.sql: the column's grant revoked and the claim dropped, then
-- t0014's claim with its privileges and t0014's lease as CREATE OR REPLACE, read from
-- t0014_upgrade.sql) counts leases again; attempts already counted stay as they are either
-- way.

CREATE OR REPLACE FUNCTION transfer_lease_payouts(
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
    SET available_at = clock_timestamp()
            + make_interval(secs => p_lease_seconds * power(2, least(p.attempts, 6)))
    WHERE p.transaction_id = ANY (ARRAY(
        SELECT d.transaction_id FROM payouts AS d
        WHERE d.status = 'PENDING' AND d.available_at <= clock_timestamp()
        ORDER BY d.available_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED))
    RETURNING p.transaction_id, p.account_hash, p.amount, p.currency, p.attempts, p.available_at
$$;

DROP FUNCTION transfer_claim_payout_for_bank(uuid, timestamptz, double precision,
                                             double precision);

CREATE FUNCTION transfer_claim_payout_for_bank(
    p_transaction_id uuid, p_lease_until timestamptz, p_hold_seconds double precision,
    p_bank_seconds double precision
) RETURNS TABLE (answer text, lease_until timestamptz, attempts integer)
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
        attempts = payouts.attempts + 1,
        held_since = NULL
    WHERE payouts.transaction_id = p_transaction_id
    RETURNING payouts.available_at, payouts.attempts INTO lease_until, attempts;
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

GRANT SELECT (user_id) ON wallets TO __APP_ROLE__;
