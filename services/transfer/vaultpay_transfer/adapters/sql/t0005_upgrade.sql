-- Migration t0005: a PIN-checked movement's key is held from its stored-answer lookup to its
-- ledger call, across transfer processes.
--
-- SendMoney and Withdraw look the stored answer up, then ask wallet for the PIN, then call the
-- ledger. A retry served by another transfer process while the first attempt was still on its
-- way to the ledger could be refused (say, for the balance) and the first attempt commit
-- afterwards, against the answer the client kept. Now the lookup also takes the key's
-- session-level advisory lock (pg_try_advisory_lock, the same 64-bit id the ledger's claim
-- locks), which another process's lookup of the same key cannot take (IDEMPOTENCY_KEY_IN_USE),
-- and the movement's ledger call goes through one of these functions, which passes the hold
-- to its own transaction's claim and releases the session lock before the movement runs: the
-- key stays locked until the COMMIT, then is free. No round trip is added.

-- The caller's session-level hold of p_lock becomes this transaction's (the same session may
-- take a lock it holds; the ledger's claim then takes it again).
CREATE FUNCTION transfer_pass_hold(p_lock bigint) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    IF NOT pg_advisory_unlock(p_lock) THEN
        RAISE EXCEPTION 'the movement''s key is not held by this session'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

-- SendMoney whose key the caller holds (see above); otherwise transfer_send_money itself.
CREATE FUNCTION transfer_send_money_held(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_lock bigint,
    p_user_id text, p_recipient_wallet_id text, p_amount bigint, p_currency text,
    p_note text
) RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM transfer_pass_hold(p_lock);
    RETURN QUERY SELECT m.outcome, m.reply FROM transfer_send_money(
        p_caller, p_method, p_request_id, p_fingerprint, p_lock, p_user_id,
        p_recipient_wallet_id, p_amount, p_currency, p_note) AS m;
END
$$;

-- Withdraw whose key the caller holds (see above); otherwise transfer_withdraw itself.
CREATE FUNCTION transfer_withdraw_held(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_lock bigint,
    p_user_id text, p_amount bigint, p_currency text, p_ifsc text, p_account_mask text,
    p_account_hash text, p_holder_name text
) RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM transfer_pass_hold(p_lock);
    RETURN QUERY SELECT m.outcome, m.reply FROM transfer_withdraw(
        p_caller, p_method, p_request_id, p_fingerprint, p_lock, p_user_id, p_amount,
        p_currency, p_ifsc, p_account_mask, p_account_hash, p_holder_name) AS m;
END
$$;

REVOKE ALL ON FUNCTION
    transfer_pass_hold(bigint),
    transfer_send_money_held(text, text, uuid, text, bigint, text, text, bigint, text, text),
    transfer_withdraw_held(text, text, uuid, text, bigint, text, bigint, text, text, text,
                           text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    transfer_send_money_held(text, text, uuid, text, bigint, text, text, bigint, text, text),
    transfer_withdraw_held(text, text, uuid, text, bigint, text, bigint, text, text, text,
                           text, text)
TO __APP_ROLE__;
