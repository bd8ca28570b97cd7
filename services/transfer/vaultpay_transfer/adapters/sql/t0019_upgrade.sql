-- Migration t0019: a payment reference already credited is answered before the wallet's
-- other refusals.
--
-- transfer_top_up found a credited (payment_method, payment_reference) only by its first
-- write, the INSERT INTO top_up_payments ... ON CONFLICT DO NOTHING, after the wallet's state
-- (transfer_state_refusal), its currency, KYC, the request id's reuse and the limits. A TopUp
-- that committed but whose reply was lost, retried under a new request id with the same
-- reference, was answered DAILY_LIMIT_EXCEEDED when the first had filled the day (tomorrow
-- PAYMENT_REFERENCE_USED; WALLET_FROZEN if the wallet was frozen meanwhile): a definite
-- refusal that says the external payment was not credited, so a funding flow that refunds
-- the payer on a refusal would refund money the wallet got. Nothing was credited twice; the
-- answer was wrong. Now the function looks the pair up first, one probe of top_up_payments'
-- primary key (payment_method, payment_reference), and answers PAYMENT_REFERENCE_USED
-- before any other refusal of the wallet.
--
-- The lookup comes after the idempotency claim (a retry under the SAME request id still
-- replays the stored answer) and after the wallet's row lock, not before it: two top-ups of
-- one wallet queue on that lock, and the first commits (its payment row visible) before it
-- releases it, so a retry racing its first attempt, which waited for the lock, sees the
-- first's payment row: under READ COMMITTED each statement after the wait takes a new
-- snapshot. Before the lock it could read too early, pass, and be refused by the limits
-- again. The INSERT ... ON CONFLICT DO NOTHING stays, the backstop for the same reference
-- credited concurrently to another wallet (whose row lock is not this one). Otherwise
-- t0016's transfer_top_up (t0016_upgrade.sql), byte for byte; CREATE OR REPLACE keeps its
-- owner and privileges, and the statement restates SECURITY DEFINER and the pinned
-- search_path.

CREATE OR REPLACE FUNCTION transfer_top_up(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_lock bigint,
    p_user_id text, p_amount bigint, p_currency text, p_payment_method text,
    p_payment_reference text, p_description text
) RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    w record;
    v_now timestamptz;
    v_day date;
    v_movement uuid := gen_random_uuid();
    v_credit uuid := gen_random_uuid();
    v_reference text;
    v_after bigint;
BEGIN
    SELECT c.outcome, c.reply INTO outcome, reply
    FROM transfer_claim(p_caller, p_method, p_request_id, p_fingerprint, p_lock) AS c;
    IF FOUND THEN RETURN NEXT; RETURN; END IF;

    SELECT id, user_id, currency, balance, status, kyc_tier INTO w
    FROM wallets WHERE user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN outcome := 'WALLET_NOT_FOUND'; RETURN NEXT; RETURN; END IF;
    v_now := clock_timestamp();
    -- A reference already credited is answered first, whatever else the wallet would be
    -- refused for; read under the row lock, after any earlier top-up of this wallet ended.
    IF EXISTS (SELECT 1 FROM top_up_payments
               WHERE payment_method = p_payment_method
                 AND payment_reference = p_payment_reference) THEN
        outcome := 'PAYMENT_REFERENCE_USED'; RETURN NEXT; RETURN;
    END IF;
    outcome := transfer_state_refusal(w.id, w.status);
    IF outcome IS NOT NULL THEN RETURN NEXT; RETURN; END IF;
    IF p_currency <> w.currency THEN
        outcome := 'CURRENCY_MISMATCH';
        reply := json_build_object('currency', w.currency)::text;
        RETURN NEXT; RETURN;
    END IF;
    IF w.kyc_tier = 'NONE' THEN outcome := 'KYC_NOT_VERIFIED'; RETURN NEXT; RETURN; END IF;
    IF EXISTS (SELECT 1 FROM wallet_transactions AS t
               WHERE t.user_id = p_user_id AND t.request_id = p_request_id) THEN
        outcome := 'IDEMPOTENCY_KEY_REUSED'; RETURN NEXT; RETURN;
    END IF;
    v_day := transfer_business_day(v_now);
    SELECT l.outcome, l.reply INTO outcome, reply
    FROM transfer_limit_refusal(w.id, w.kyc_tier, 'top_up', p_amount, v_day, w.currency) AS l;
    IF FOUND THEN
        reply := (reply::jsonb || jsonb_build_object('decided_at', v_now))::text;
        RETURN NEXT; RETURN;
    END IF;
    -- The first write: a payment reference already credited stops the call here, having
    -- written nothing (a concurrent insert of the same one is waited for).
    INSERT INTO top_up_payments (payment_method, payment_reference, transaction_id, created_at)
    VALUES (p_payment_method, p_payment_reference, v_credit, v_now)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN outcome := 'PAYMENT_REFERENCE_USED'; RETURN NEXT; RETURN; END IF;

    v_reference := transfer_open_movement(v_movement, 'TOP_UP', w.currency, p_amount, v_now,
                                          true);
    UPDATE wallets SET balance = balance + p_amount WHERE id = w.id RETURNING balance INTO v_after;
    INSERT INTO ledger_postings (ledger_transaction_id, account, currency, amount, created_at)
    VALUES (v_movement, 'sys:clearing', w.currency, -p_amount, v_now),
           (v_movement, w.id, w.currency, p_amount, v_now);
    WITH side AS (
        INSERT INTO wallet_transactions (
            id, ledger_transaction_id, reference, request_id, user_id, wallet_id, type,
            category, status, amount, currency, balance_after, counterparty_description,
            created_at, completed_at)
        VALUES (v_credit, v_movement, v_reference, p_request_id, w.user_id, w.id, 'CREDIT',
                'TOP_UP', 'COMPLETED', p_amount, w.currency, v_after, p_description, v_now,
                v_now)
        RETURNING *
    )
    SELECT row_to_json(side)::text INTO reply FROM side;
    PERFORM transfer_count_usage(w.id, 'top_up', v_day, p_amount);
    PERFORM transfer_remember(p_caller, p_method, p_request_id, p_fingerprint, reply);
    PERFORM transfer_notify(w.user_id, 'TOP_UP', jsonb_build_object(
        'transaction_id', v_credit, 'reference', v_reference, 'amount_minor', p_amount::text,
        'currency', w.currency, 'counterparty', p_description,
        'balance_after_minor', v_after::text));
    outcome := 'OK';
    RETURN NEXT;
END
$$;
