-- The money path: each movement is ONE call of one of these functions, so the whole ledger
-- transaction (claim the idempotency key, lock the wallets in id order, re-check status,
-- KYC, limits and balance, move the balances, write postings, rows, the idempotency record
-- and the outbox events) costs one client round trip and holds the row locks for the least
-- time. The caller runs the call as a single statement outside any explicit transaction, so
-- the statement's implicit transaction commits before the reply reaches it.
--
-- Every function returns (outcome, reply): outcome 'OK' (reply = the caller's side of the
-- movement as JSON), 'REPLAY' (reply = the stored answer of an earlier identical request),
-- or a refusal code (reply = JSON details or NULL) that Python maps to the stable reasons of
-- API.md. A refusal is always decided before the first write, so a refused movement writes
-- nothing.
--
-- SECURITY DEFINER: the app role has no INSERT/UPDATE on the ledger tables and cannot change
-- wallets.balance itself (protect.sql); these functions are the only way money moves.
-- search_path is pinned with pg_catalog first.
--
-- This file holds the functions as they are now (CREATE OR REPLACE, applied by migration
-- t0002 over t0001's, which functions_t0001.sql keeps for t0001 and t0002's downgrade).
-- Every helper is PL/pgSQL, none LANGUAGE sql: PostgreSQL plans a SQL function's body anew
-- each time a statement of another function calls it (its SET search_path also keeps it from
-- being inlined), which cost a transfer more than half its CPU, while PL/pgSQL keeps the plan
-- of each of its statements for the session. What they read, lock and write, and in which
-- order, is exactly what t0001's did.

CREATE OR REPLACE FUNCTION transfer_new_reference() RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- 8 symbols of 5 bits each from gen_random_uuid() (pg_strong_random, a CSPRNG), from
    -- bytes whose low 5 bits are random (bytes 6 and 8 carry the UUID version/variant bits
    -- in their high bits only). No 0/O or 1/I, so a reference read aloud is unambiguous.
    b constant bytea := uuid_send(gen_random_uuid());
    a constant text := 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
BEGIN
    RETURN 'VP-TXN-'
        || substr(a, get_byte(b, 0) % 32 + 1, 1) || substr(a, get_byte(b, 1) % 32 + 1, 1)
        || substr(a, get_byte(b, 2) % 32 + 1, 1) || substr(a, get_byte(b, 3) % 32 + 1, 1)
        || substr(a, get_byte(b, 4) % 32 + 1, 1) || substr(a, get_byte(b, 5) % 32 + 1, 1)
        || substr(a, get_byte(b, 9) % 32 + 1, 1) || substr(a, get_byte(b, 10) % 32 + 1, 1);
END
$$;

-- The idempotency claim of a movement (vaultpay_common.idempotency's rule, in SQL): the
-- transaction-scoped advisory lock on the key's hash (computed by the caller with
-- idempotency_lock_key) makes a concurrent duplicate answer IN_USE; once held, a new
-- snapshot sees the record of an earlier call that committed. Returns no row when the call
-- may go on.
CREATE OR REPLACE FUNCTION transfer_claim(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_lock bigint
) RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_fingerprint text;
    v_reply bytea;
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_lock) THEN
        outcome := 'IDEMPOTENCY_KEY_IN_USE';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT r.fingerprint, r.reply INTO v_fingerprint, v_reply
    FROM idempotency_records AS r
    WHERE r.caller = p_caller AND r.method = p_method AND r.request_id = p_request_id;
    IF FOUND THEN
        IF v_fingerprint <> p_fingerprint THEN
            outcome := 'IDEMPOTENCY_KEY_REUSED';
        ELSE
            outcome := 'REPLAY';
            reply := convert_from(v_reply, 'UTF8');
        END IF;
        RETURN NEXT;
    END IF;
END
$$;

-- A FROZEN wallet counts as frozen while one of its freezes is in force (an expired one is
-- already lifted for readers, wallet's `Wallet.current`), or when no freeze row explains it.
CREATE OR REPLACE FUNCTION transfer_is_frozen(p_wallet_id text, p_status text)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN p_status = 'FROZEN' AND (
        EXISTS (SELECT 1 FROM wallet_freezes AS f
                WHERE f.wallet_id = p_wallet_id AND (f.until IS NULL OR f.until > now()))
        OR NOT EXISTS (SELECT 1 FROM wallet_freezes AS f WHERE f.wallet_id = p_wallet_id));
END
$$;

-- The business day of a movement: limits reset at midnight Asia/Kolkata.
CREATE OR REPLACE FUNCTION transfer_business_day(p_at timestamptz) RETURNS date
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (p_at AT TIME ZONE 'Asia/Kolkata')::date;
END
$$;

-- A wallet's effective caps for one action, read from wallet's own tables in the caller's
-- transaction (the rule of vaultpay_wallet.domain.limits.effective_caps):
--   base = the admin override's window if set, else the KYC tier's default setting;
--   effective = min(base, the user's own limit) when the user set one.
-- A missing default fails closed (a cap of 0).
CREATE OR REPLACE FUNCTION transfer_caps(
    p_wallet_id text, p_tier text, p_action text,
    OUT per_transaction bigint, OUT daily bigint, OUT monthly bigint
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    -- The three default keys, computed once: the statement below then looks them up by the
    -- primary key instead of building them again for every settings row it reads.
    v_prefix constant text := 'limits.tier_' || lower(p_tier) || '.' || p_action || '.';
    v_per_transaction constant text := v_prefix || 'per_transaction';
    v_daily constant text := v_prefix || 'daily';
    v_monthly constant text := v_prefix || 'monthly';
BEGIN
    -- One statement: the defaults (at most one row per key) and both overrides (at most one
    -- row per source: wallet_limit_overrides_key) each folded into one row.
    SELECT
        coalesce(least(coalesce(o.admin_per_transaction, d.per_transaction),
                       o.user_per_transaction), 0),
        coalesce(least(coalesce(o.admin_daily, d.daily), o.user_daily), 0),
        coalesce(least(coalesce(o.admin_monthly, d.monthly), o.user_monthly), 0)
    INTO per_transaction, daily, monthly
    FROM (
        SELECT
            max(s.value::bigint) FILTER (WHERE s.key = v_per_transaction) AS per_transaction,
            max(s.value::bigint) FILTER (WHERE s.key = v_daily) AS daily,
            max(s.value::bigint) FILTER (WHERE s.key = v_monthly) AS monthly
        FROM system_settings AS s
        WHERE s.key IN (v_per_transaction, v_daily, v_monthly)
    ) AS d, (
        SELECT
            max(w.per_transaction) FILTER (WHERE w.source = 'ADMIN_OVERRIDE')
                AS admin_per_transaction,
            max(w.daily) FILTER (WHERE w.source = 'ADMIN_OVERRIDE') AS admin_daily,
            max(w.monthly) FILTER (WHERE w.source = 'ADMIN_OVERRIDE') AS admin_monthly,
            max(w.per_transaction) FILTER (WHERE w.source = 'USER') AS user_per_transaction,
            max(w.daily) FILTER (WHERE w.source = 'USER') AS user_daily,
            max(w.monthly) FILTER (WHERE w.source = 'USER') AS user_monthly
        FROM wallet_limit_overrides AS w
        WHERE w.wallet_id = p_wallet_id AND w.action = p_action
          AND w.source IN ('ADMIN_OVERRIDE', 'USER')
    ) AS o;
END
$$;

-- The limit a movement of `p_amount` would break, checked under the wallet's row lock (so
-- concurrent movements can never pass a limit together); no row when none.
CREATE OR REPLACE FUNCTION transfer_limit_refusal(
    p_wallet_id text, p_tier text, p_action text, p_amount bigint, p_day date,
    p_currency text
) RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    c record;
    v_day_used bigint;
    v_month_used bigint;
BEGIN
    SELECT * INTO c FROM transfer_caps(p_wallet_id, p_tier, p_action);
    IF p_amount > c.per_transaction THEN
        outcome := 'PER_TRANSACTION_LIMIT_EXCEEDED';
        reply := json_build_object('action', p_action, 'limit_minor', c.per_transaction::text,
                                   'used_minor', '0', 'currency', p_currency)::text;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT coalesce(sum(u.used) FILTER (WHERE u.day = p_day), 0), coalesce(sum(u.used), 0)
    INTO v_day_used, v_month_used
    FROM limit_usage AS u
    WHERE u.wallet_id = p_wallet_id AND u.action = p_action
      AND u.day >= date_trunc('month', p_day)::date AND u.day <= p_day;
    IF v_day_used + p_amount > c.daily THEN
        outcome := 'DAILY_LIMIT_EXCEEDED';
        reply := json_build_object('action', p_action, 'limit_minor', c.daily::text,
                                   'used_minor', v_day_used::text, 'currency', p_currency)::text;
        RETURN NEXT;
    ELSIF v_month_used + p_amount > c.monthly THEN
        outcome := 'MONTHLY_LIMIT_EXCEEDED';
        reply := json_build_object('action', p_action, 'limit_minor', c.monthly::text,
                                   'used_minor', v_month_used::text,
                                   'currency', p_currency)::text;
        RETURN NEXT;
    END IF;
END
$$;

-- Records a movement against its wallet's limit usage (under the wallet's row lock); a
-- negative amount gives usage back (a returned payout), never below zero.
CREATE OR REPLACE FUNCTION transfer_count_usage(
    p_wallet_id text, p_action text, p_day date, p_amount bigint
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO limit_usage AS u (wallet_id, action, day, used)
    VALUES (p_wallet_id, p_action, p_day, greatest(p_amount, 0))
    ON CONFLICT (wallet_id, action, day) DO UPDATE SET used = greatest(u.used + p_amount, 0);
END
$$;

-- A new movement with a fresh reference (drawn again on the rare collision).
CREATE OR REPLACE FUNCTION transfer_open_movement(
    p_id uuid, p_kind text, p_currency text, p_amount bigint, p_at timestamptz,
    p_with_reference boolean
) RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_reference text;
BEGIN
    IF NOT p_with_reference THEN
        INSERT INTO ledger_transactions (id, reference, kind, currency, amount, created_at)
        VALUES (p_id, NULL, p_kind, p_currency, p_amount, p_at);
        RETURN NULL;
    END IF;
    LOOP
        v_reference := transfer_new_reference();
        INSERT INTO ledger_transactions (id, reference, kind, currency, amount, created_at)
        VALUES (p_id, v_reference, p_kind, p_currency, p_amount, p_at)
        ON CONFLICT (reference) DO NOTHING;
        EXIT WHEN FOUND;
    END LOOP;
    RETURN v_reference;
END
$$;

-- The notification event of one side of a movement (delivered by the transfer relay to
-- wallet's CreateNotification, deduplicated there by the event id).
CREATE OR REPLACE FUNCTION transfer_notify(p_user_id text, p_kind text, p_facts jsonb)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO outbox_events (event_id, producer, topic, key, payload)
    VALUES (gen_random_uuid(), 'transfer', 'notification.create', p_user_id,
            p_facts || jsonb_build_object('user_id', p_user_id, 'kind', p_kind));
END
$$;

-- Stores the answer of a completed movement under its idempotency key.
CREATE OR REPLACE FUNCTION transfer_remember(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_reply text
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply)
    VALUES (p_caller, p_method, p_request_id, p_fingerprint, convert_to(p_reply, 'UTF8'));
END
$$;

-- The refusal for a wallet that may not move money out (or be topped up): closed, frozen.
CREATE OR REPLACE FUNCTION transfer_state_refusal(p_wallet_id text, p_status text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF p_status = 'CLOSED' THEN
        RETURN 'WALLET_CLOSED';
    ELSIF transfer_is_frozen(p_wallet_id, p_status) THEN
        RETURN 'WALLET_FROZEN';
    END IF;
    RETURN NULL;
END
$$;

-- SendMoney: the atomic P2P transfer.
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
    v_now timestamptz := clock_timestamp();
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
    IF EXISTS (SELECT 1 FROM wallet_transactions AS t
               WHERE t.user_id = p_user_id AND t.request_id = p_request_id) THEN
        outcome := 'IDEMPOTENCY_KEY_REUSED'; RETURN NEXT; RETURN;
    END IF;
    v_day := transfer_business_day(v_now);
    SELECT l.outcome, l.reply INTO outcome, reply
    FROM transfer_limit_refusal(s.id, s.kyc_tier, 'send', p_amount, v_day, s.currency) AS l;
    IF FOUND THEN RETURN NEXT; RETURN; END IF;
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

-- TopUp: external money enters through the clearing account (a system account, no row).
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
    v_now timestamptz := clock_timestamp();
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
    IF FOUND THEN RETURN NEXT; RETURN; END IF;
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

-- Withdraw: the money leaves the wallet at once into payouts-in-flight (a system account);
-- the payout worker settles it to the clearing account or returns it (below).
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
    v_now timestamptz := clock_timestamp();
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
    FROM transfer_limit_refusal(w.id, w.kyc_tier, 'withdraw', p_amount, v_day, w.currency) AS l;
    IF FOUND THEN RETURN NEXT; RETURN; END IF;
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

-- The payout worker's lease: due pending payouts, invisible to other workers for a while.
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

-- The bank paid it out: payouts-in-flight -> clearing; the withdrawal completes. Idempotent:
-- a payout already settled or returned is left as it is ('ALREADY_FINISHED').
CREATE OR REPLACE FUNCTION transfer_settle_payout(p_transaction_id uuid)
RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    p record;
    v_now timestamptz := clock_timestamp();
    v_movement uuid := gen_random_uuid();
BEGIN
    SELECT * INTO p FROM payouts WHERE payouts.transaction_id = p_transaction_id FOR UPDATE;
    IF NOT FOUND THEN outcome := 'NOT_FOUND'; RETURN NEXT; RETURN; END IF;
    IF p.status <> 'PENDING' THEN outcome := 'ALREADY_FINISHED'; RETURN NEXT; RETURN; END IF;
    PERFORM transfer_open_movement(v_movement, 'PAYOUT_SETTLED', p.currency, p.amount, v_now,
                                   false);
    INSERT INTO ledger_postings (ledger_transaction_id, account, currency, amount, created_at)
    VALUES (v_movement, 'sys:payouts_in_flight', p.currency, -p.amount, v_now),
           (v_movement, 'sys:clearing', p.currency, p.amount, v_now);
    UPDATE payouts SET status = 'SETTLED', finished_at = v_now
    WHERE payouts.transaction_id = p_transaction_id;
    UPDATE wallet_transactions AS t SET status = 'COMPLETED', completed_at = v_now
    WHERE t.id = p_transaction_id
    RETURNING row_to_json(t)::text INTO reply;
    PERFORM transfer_notify(t.user_id, 'WITHDRAWAL_SETTLED', jsonb_build_object(
        'transaction_id', t.id, 'reference', t.reference, 'amount_minor', t.amount::text,
        'currency', t.currency, 'counterparty', t.counterparty_description))
    FROM wallet_transactions AS t WHERE t.id = p_transaction_id;
    outcome := 'OK';
    RETURN NEXT;
END
$$;

-- The bank refused it: payouts-in-flight -> the wallet, as a new credit (category WITHDRAW,
-- pointing at the withdrawal), and the withdrawal becomes FAILED; its limit usage is given
-- back. Idempotent like transfer_settle_payout.
CREATE OR REPLACE FUNCTION transfer_return_payout(p_transaction_id uuid, p_reason text)
RETURNS TABLE (outcome text, reply text)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    p record;
    t record;
    w record;
    v_now timestamptz := clock_timestamp();
    v_movement uuid := gen_random_uuid();
    v_credit uuid := gen_random_uuid();
    v_reference text;
    v_after bigint;
BEGIN
    SELECT * INTO p FROM payouts WHERE payouts.transaction_id = p_transaction_id FOR UPDATE;
    IF NOT FOUND THEN outcome := 'NOT_FOUND'; RETURN NEXT; RETURN; END IF;
    IF p.status <> 'PENDING' THEN outcome := 'ALREADY_FINISHED'; RETURN NEXT; RETURN; END IF;
    SELECT id, user_id, display_name, balance INTO w
    FROM wallets WHERE id = p.wallet_id FOR UPDATE;
    SELECT * INTO t FROM wallet_transactions WHERE id = p_transaction_id;
    v_reference := transfer_open_movement(v_movement, 'PAYOUT_RETURNED', p.currency, p.amount,
                                          v_now, true);
    UPDATE wallets SET balance = balance + p.amount WHERE id = w.id RETURNING balance INTO v_after;
    INSERT INTO ledger_postings (ledger_transaction_id, account, currency, amount, created_at)
    VALUES (v_movement, 'sys:payouts_in_flight', p.currency, -p.amount, v_now),
           (v_movement, w.id, p.currency, p.amount, v_now);
    INSERT INTO wallet_transactions (
        id, ledger_transaction_id, reference, request_id, user_id, wallet_id, type, category,
        status, amount, currency, balance_after, counterparty_description,
        original_transaction_id, created_at, completed_at)
    VALUES (v_credit, v_movement, v_reference, NULL, w.user_id, w.id, 'CREDIT', 'WITHDRAW',
            'COMPLETED', p.amount, p.currency, v_after, t.counterparty_description,
            p_transaction_id, v_now, v_now);
    UPDATE payouts SET status = 'RETURNED', finished_at = v_now, failure_reason = p_reason
    WHERE payouts.transaction_id = p_transaction_id;
    UPDATE wallet_transactions AS u SET status = 'FAILED', completed_at = v_now
    WHERE u.id = p_transaction_id
    RETURNING row_to_json(u)::text INTO reply;
    PERFORM transfer_count_usage(w.id, 'withdraw', transfer_business_day(t.created_at),
                                 -p.amount);
    PERFORM transfer_notify(w.user_id, 'WITHDRAWAL_RETURNED', jsonb_build_object(
        'transaction_id', p_transaction_id, 'reference', t.reference,
        'amount_minor', p.amount::text, 'currency', p.currency,
        'counterparty', t.counterparty_description, 'reason', p_reason,
        'balance_after_minor', v_after::text));
    outcome := 'OK';
    RETURN NEXT;
END
$$;
