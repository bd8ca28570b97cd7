-- Migration t0023: a retry's answers after its stored answer expired, and the held
-- movement's look-up reads after it takes the key.
--
-- transfer_send_money, transfer_withdraw, transfer_top_up. Each refuses a request id that
-- already moved the user's money (IDEMPOTENCY_KEY_REUSED; t0001, the guard behind the
-- stored answers, which expire after 48 h). The check came after the wallet's state, the
-- recipient's, the currency and KYC: a client retrying a payment that committed, once its
-- stored answer was purged, was told RECIPIENT_CLOSED or WALLET_FROZEN (say) for a payment
-- that went through, a definite refusal its commit contradicts. It now comes first under the
-- wallet's row lock (for TopUp right after the reference credited to this wallet, t0020,
-- which answers such a retry just as truly). A movement that passes runs the same statements
-- as before, in another order. Otherwise t0016's send and withdraw (t0016_upgrade.sql) and
-- t0020's top-up (t0020_upgrade.sql), byte for byte; CREATE OR REPLACE keeps their owner and
-- privileges, and each statement restates SECURITY DEFINER and the pinned search_path.
--
-- transfer_hold_lookup. A PIN-checked movement first looks up its stored answer and, when
-- there is none, takes its key's advisory lock for the rest of its way (ledger_pg.py,
-- `PgLedger.hold`). As one statement, the look-up read on a snapshot taken before the lock:
-- an earlier attempt that committed and let go of the key between the two went unseen, and
-- the retry asked wallet for the PIN again (a wrong PIN there was a counted attempt and an
-- INVALID_PIN for a payment that had gone through; the ledger's own claim then answered it
-- right). The function reads, takes the lock, and reads again on a new snapshot when it took
-- it: a commit is visible before its key is let go. Then, still holding it, it tells whether
-- the request id already moved the user's money (`used`: a stored answer expired, or another
-- method used the id), so that such a retry is IDEMPOTENCY_KEY_REUSED before wallet's PIN
-- check, which refuses a frozen wallet: without it, the money functions' moved check above
-- was never reached by a SendMoney or Withdraw retry of a frozen sender. One round trip, as
-- before, and one more index probe.

CREATE OR REPLACE FUNCTION transfer_send_money(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_lock bigint,
    p_user_id text, p_recipient_wallet_id text, p_amount bigint, p_currency text,
    p_note text
) RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_sender_id text;
    w record;
    s record;
    r record;
    v_now timestamptz;
    v_day date;
    v_movement uuid := gen_random_uuid();
    v_debit uuid := gen_random_uuid();
    v_reference text;
    v_sender_after bigint;
    v_recipient_after bigint;
BEGIN
    SELECT c.outcome, c.reply INTO outcome, reply
    FROM transfer_claim(p_caller, p_method, p_request_id, p_fingerprint, p_lock) AS c;
    IF FOUND THEN RETURN NEXT; RETURN; END IF;

    SELECT id INTO v_sender_id FROM wallets WHERE user_id = p_user_id;
    IF NOT FOUND THEN outcome := 'WALLET_NOT_FOUND'; RETURN NEXT; RETURN; END IF;
    IF v_sender_id = p_recipient_wallet_id THEN
        outcome := 'SELF_TRANSFER'; RETURN NEXT; RETURN;
    END IF;

    -- Both rows, locked in id order: two opposite sends between the same pair queue, never
    -- deadlock. A freeze that committed before this point is seen below.
    FOR w IN
        SELECT id, user_id, display_name, currency, balance, status, kyc_tier FROM wallets
        WHERE id IN (v_sender_id, p_recipient_wallet_id) ORDER BY id FOR UPDATE
    LOOP
        IF w.id = v_sender_id THEN s := w; ELSE r := w; END IF;
    END LOOP;
    v_now := clock_timestamp();
    -- A request id that moved this user's money answers so before anything else is judged
    -- (t0023), read under the row lock: a retry whose stored answer expired is told that its
    -- request id was used, never a refusal its commit contradicts.
    IF EXISTS (SELECT 1 FROM wallet_transactions AS t
               WHERE t.user_id = p_user_id AND t.request_id = p_request_id) THEN
        outcome := 'IDEMPOTENCY_KEY_REUSED'; RETURN NEXT; RETURN;
    END IF;
    IF r IS NULL THEN outcome := 'RECIPIENT_NOT_FOUND'; RETURN NEXT; RETURN; END IF;

    outcome := transfer_state_refusal(s.id, s.status);
    IF outcome IS NOT NULL THEN RETURN NEXT; RETURN; END IF;
    IF r.status = 'CLOSED' THEN outcome := 'RECIPIENT_CLOSED'; RETURN NEXT; RETURN; END IF;
    IF p_currency <> s.currency OR r.currency <> s.currency THEN
        outcome := 'CURRENCY_MISMATCH';
        reply := json_build_object('currency', s.currency)::text;
        RETURN NEXT; RETURN;
    END IF;
    IF s.kyc_tier = 'NONE' THEN outcome := 'KYC_NOT_VERIFIED'; RETURN NEXT; RETURN; END IF;
    v_day := transfer_business_day(v_now);
    SELECT l.outcome, l.reply INTO outcome, reply
    FROM transfer_limit_refusal(s.id, s.kyc_tier, 'send', p_amount, v_day, s.currency) AS l;
    IF FOUND THEN
        reply := (reply::jsonb || jsonb_build_object('decided_at', v_now))::text;
        RETURN NEXT; RETURN;
    END IF;
    IF s.balance < p_amount THEN outcome := 'INSUFFICIENT_BALANCE'; RETURN NEXT; RETURN; END IF;

    -- Every check passed: the writes.
    v_reference := transfer_open_movement(v_movement, 'P2P', s.currency, p_amount, v_now, true);
    UPDATE wallets SET balance = balance - p_amount WHERE id = s.id
    RETURNING balance INTO v_sender_after;
    UPDATE wallets SET balance = balance + p_amount WHERE id = r.id
    RETURNING balance INTO v_recipient_after;
    INSERT INTO ledger_postings (ledger_transaction_id, account, currency, amount, created_at)
    VALUES (v_movement, s.id, s.currency, -p_amount, v_now),
           (v_movement, r.id, s.currency, p_amount, v_now);
    WITH sides AS (
        INSERT INTO wallet_transactions (
            id, ledger_transaction_id, reference, request_id, user_id, wallet_id, type,
            category, status, amount, currency, balance_after, counterparty_wallet_id,
            counterparty_name, note, created_at, completed_at)
        VALUES
            (v_debit, v_movement, v_reference, p_request_id, s.user_id, s.id, 'DEBIT',
             'P2P_SEND', 'COMPLETED', p_amount, s.currency, v_sender_after, r.id,
             r.display_name, p_note, v_now, v_now),
            (gen_random_uuid(), v_movement, v_reference, NULL, r.user_id, r.id, 'CREDIT',
             'P2P_RECEIVE', 'COMPLETED', p_amount, s.currency, v_recipient_after, s.id,
             s.display_name, p_note, v_now, v_now)
        RETURNING *
    )
    SELECT row_to_json(sides)::text INTO reply FROM sides WHERE sides.id = v_debit;
    PERFORM transfer_count_usage(s.id, 'send', v_day, p_amount);
    PERFORM transfer_remember(p_caller, p_method, p_request_id, p_fingerprint, reply);
    PERFORM transfer_notify(s.user_id, 'MONEY_SENT', jsonb_build_object(
        'transaction_id', v_debit, 'reference', v_reference, 'amount_minor', p_amount::text,
        'currency', s.currency, 'counterparty', r.display_name, 'counterparty_wallet_id', r.id,
        'balance_after_minor', v_sender_after::text));
    PERFORM transfer_notify(r.user_id, 'MONEY_RECEIVED', jsonb_build_object(
        'reference', v_reference, 'amount_minor', p_amount::text, 'currency', s.currency,
        'counterparty', s.display_name, 'counterparty_wallet_id', s.id,
        'balance_after_minor', v_recipient_after::text));
    outcome := 'OK';
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION transfer_withdraw(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_lock bigint,
    p_user_id text, p_amount bigint, p_currency text, p_ifsc text, p_account_mask text,
    p_account_hash text, p_holder_name text
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
    v_debit uuid := gen_random_uuid();
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
    -- A request id that moved this user's money answers so before anything else is judged
    -- (t0023), read under the row lock: a retry whose stored answer expired is told that its
    -- request id was used, never a refusal its commit contradicts.
    IF EXISTS (SELECT 1 FROM wallet_transactions AS t
               WHERE t.user_id = p_user_id AND t.request_id = p_request_id) THEN
        outcome := 'IDEMPOTENCY_KEY_REUSED'; RETURN NEXT; RETURN;
    END IF;
    outcome := transfer_state_refusal(w.id, w.status);
    IF outcome IS NOT NULL THEN RETURN NEXT; RETURN; END IF;
    IF p_currency <> w.currency THEN
        outcome := 'CURRENCY_MISMATCH';
        reply := json_build_object('currency', w.currency)::text;
        RETURN NEXT; RETURN;
    END IF;
    IF w.kyc_tier = 'NONE' THEN outcome := 'KYC_NOT_VERIFIED'; RETURN NEXT; RETURN; END IF;
    v_day := transfer_business_day(v_now);
    SELECT l.outcome, l.reply INTO outcome, reply
    FROM transfer_limit_refusal(w.id, w.kyc_tier, 'withdraw', p_amount, v_day, w.currency) AS l;
    IF FOUND THEN
        reply := (reply::jsonb || jsonb_build_object('decided_at', v_now))::text;
        RETURN NEXT; RETURN;
    END IF;
    IF w.balance < p_amount THEN outcome := 'INSUFFICIENT_BALANCE'; RETURN NEXT; RETURN; END IF;

    v_reference := transfer_open_movement(v_movement, 'WITHDRAW', w.currency, p_amount, v_now,
                                          true);
    UPDATE wallets SET balance = balance - p_amount WHERE id = w.id RETURNING balance INTO v_after;
    INSERT INTO ledger_postings (ledger_transaction_id, account, currency, amount, created_at)
    VALUES (v_movement, w.id, w.currency, -p_amount, v_now),
           (v_movement, 'sys:payouts_in_flight', w.currency, p_amount, v_now);
    WITH side AS (
        INSERT INTO wallet_transactions (
            id, ledger_transaction_id, reference, request_id, user_id, wallet_id, type,
            category, status, amount, currency, balance_after, counterparty_description,
            created_at, completed_at)
        VALUES (v_debit, v_movement, v_reference, p_request_id, w.user_id, w.id, 'DEBIT',
                'WITHDRAW', 'PENDING', p_amount, w.currency, v_after,
                p_ifsc || ' ' || p_account_mask, v_now, NULL)
        RETURNING *
    )
    SELECT row_to_json(side)::text INTO reply FROM side;
    INSERT INTO payouts (
        transaction_id, ledger_transaction_id, wallet_id, currency, amount, ifsc, account_mask,
        account_hash, holder_name, status, created_at, available_at)
    VALUES (v_debit, v_movement, w.id, w.currency, p_amount, p_ifsc, p_account_mask,
            p_account_hash, p_holder_name, 'PENDING', v_now, v_now);
    PERFORM transfer_count_usage(w.id, 'withdraw', v_day, p_amount);
    PERFORM transfer_remember(p_caller, p_method, p_request_id, p_fingerprint, reply);
    outcome := 'OK';
    RETURN NEXT;
END
$$;

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
    -- A reference already credited TO THIS WALLET is answered first, whatever else the
    -- wallet would be refused for; read under the row lock, after any earlier top-up of this
    -- wallet ended. One credited to another wallet is not told here: the INSERT below
    -- refuses it, after the wallet's own refusals.
    IF EXISTS (SELECT 1 FROM top_up_payments AS p
               JOIN wallet_transactions AS t ON t.id = p.transaction_id
               WHERE p.payment_method = p_payment_method
                 AND p.payment_reference = p_payment_reference
                 AND t.wallet_id = w.id) THEN
        outcome := 'PAYMENT_REFERENCE_USED'; RETURN NEXT; RETURN;
    END IF;
    -- A request id that moved this user's money answers so before anything else is judged
    -- (t0023), read under the row lock: a retry whose stored answer expired is told that its
    -- request id was used, never a refusal its commit contradicts.
    IF EXISTS (SELECT 1 FROM wallet_transactions AS t
               WHERE t.user_id = p_user_id AND t.request_id = p_request_id) THEN
        outcome := 'IDEMPOTENCY_KEY_REUSED'; RETURN NEXT; RETURN;
    END IF;
    outcome := transfer_state_refusal(w.id, w.status);
    IF outcome IS NOT NULL THEN RETURN NEXT; RETURN; END IF;
    IF p_currency <> w.currency THEN
        outcome := 'CURRENCY_MISMATCH';
        reply := json_build_object('currency', w.currency)::text;
        RETURN NEXT; RETURN;
    END IF;
    IF w.kyc_tier = 'NONE' THEN outcome := 'KYC_NOT_VERIFIED'; RETURN NEXT; RETURN; END IF;
    v_day := transfer_business_day(v_now);
    SELECT l.outcome, l.reply INTO outcome, reply
    FROM transfer_limit_refusal(w.id, w.kyc_tier, 'top_up', p_amount, v_day, w.currency) AS l;
    IF FOUND THEN
        reply := (reply::jsonb || jsonb_build_object('decided_at', v_now))::text;
        RETURN NEXT; RETURN;
    END IF;
    -- The first write: a payment reference already credited (to another wallet, or to this
    -- one concurrently) stops the call here, having written nothing (a concurrent insert of
    -- the same one is waited for).
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

CREATE FUNCTION transfer_hold_lookup(
    p_caller text, p_method text, p_request_id uuid, p_lock bigint
) RETURNS TABLE (fingerprint text, reply text, held boolean, used boolean)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    used := false;
    -- The stored answer wins whoever holds the key (a retry of a finished movement).
    SELECT r.fingerprint, convert_from(r.reply, 'UTF8') INTO fingerprint, reply
    FROM idempotency_records AS r
    WHERE r.caller = p_caller AND r.method = p_method AND r.request_id = p_request_id;
    IF FOUND THEN RETURN NEXT; RETURN; END IF;
    held := pg_try_advisory_lock(p_lock);
    IF held THEN
        -- Read again, on this statement's own snapshot: a movement that committed after the
        -- read above had let go of the key only after its commit.
        SELECT r.fingerprint, convert_from(r.reply, 'UTF8') INTO fingerprint, reply
        FROM idempotency_records AS r
        WHERE r.caller = p_caller AND r.method = p_method AND r.request_id = p_request_id;
        IF FOUND THEN
            PERFORM pg_advisory_unlock(p_lock);
            held := NULL;
            RETURN NEXT; RETURN;
        END IF;
        -- No stored answer: its request id may still have moved this user's money (the
        -- answer expired, or another method used the id). Told now, before wallet is asked
        -- for the PIN, which would answer a frozen wallet's or a wrong PIN's refusal for a
        -- payment that went through. The caller of a movement is its user.
        used := EXISTS (SELECT 1 FROM wallet_transactions AS t
                        WHERE t.user_id = p_caller AND t.request_id = p_request_id);
        IF used THEN
            PERFORM pg_advisory_unlock(p_lock);
            held := NULL;
        END IF;
    END IF;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION transfer_hold_lookup(text, text, uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION transfer_hold_lookup(text, text, uuid, bigint) TO __APP_ROLE__;
