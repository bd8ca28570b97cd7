-- Migration t0020: transfer_caps fails closed when a tier default is missing, whatever the
-- user's own limit; TopUp tells a credited reference early only to the wallet it credited; a
-- payout already finished tells how it finished.
--
-- transfer_caps.
--
-- transfer_caps (functions.sql, t0002) folds each window's cap as
-- coalesce(least(coalesce(admin, default), user), 0), meaning "a missing default fails closed
-- (a cap of 0)". PostgreSQL's least() ignores NULL arguments, though: with neither an admin
-- override nor the tier's default setting for a window, a user who set their own (lower)
-- limit got least(NULL, user) = user, their own limit, as the cap, not 0; only a user without
-- one got 0. Wallet's rule (vaultpay_wallet.domain.limits.effective_caps) refuses to compute
-- caps without the default (a KeyError), so the ledger let through what wallet would not.
-- Now a window whose base (the admin override's value if set, else the tier default) is
-- missing is 0 whatever the user set; otherwise min(base, the user's own limit), as before.
-- Only the three folds change: otherwise functions.sql's transfer_caps, byte for byte (its
-- owner's search_path, STABLE, not SECURITY DEFINER: the money functions call it as their
-- owner); CREATE OR REPLACE keeps its owner and privileges.

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
        -- least() ignores NULLs: a missing base is tested first, never left to it.
        CASE WHEN coalesce(o.admin_per_transaction, d.per_transaction) IS NULL THEN 0
             ELSE least(coalesce(o.admin_per_transaction, d.per_transaction),
                        o.user_per_transaction) END,
        CASE WHEN coalesce(o.admin_daily, d.daily) IS NULL THEN 0
             ELSE least(coalesce(o.admin_daily, d.daily), o.user_daily) END,
        CASE WHEN coalesce(o.admin_monthly, d.monthly) IS NULL THEN 0
             ELSE least(coalesce(o.admin_monthly, d.monthly), o.user_monthly) END
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

-- transfer_top_up: a reference credited to another wallet is no longer told before the
-- wallet's own refusals.
--
-- t0019 answered PAYMENT_REFERENCE_USED right after the wallet's row lock for a
-- (payment_method, payment_reference) credited to ANY wallet, before the state, currency, KYC,
-- request-id and limit refusals: a frozen, closed or KYC-NONE wallet could probe whether a
-- reference was ever credited to anyone. The early answer exists for a lost-reply retry under a
-- new request id, whose reference was credited to the same wallet; it is now given only for
-- that: the payment row's transaction_id is the credit's wallet_transactions row (t0001), and
-- the lookup joins it and asks for this wallet's id (two primary-key probes). A reference
-- credited to another wallet is refused where t0016 refused it, by the INSERT ... ON CONFLICT
-- DO NOTHING into top_up_payments after the wallet's own refusals, still
-- PAYMENT_REFERENCE_USED and still never credited twice (the primary key; a concurrent credit
-- of the same reference to another wallet is waited for, then refused). Otherwise t0019's
-- transfer_top_up (t0019_upgrade.sql), byte for byte but for two comments; CREATE OR REPLACE
-- keeps its owner and privileges, and the statement restates SECURITY DEFINER and the pinned
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

-- transfer_settle_payout and transfer_return_payout: ALREADY_FINISHED tells how the payout
-- finished.
--
-- Both answered ALREADY_FINISHED, with no reply, for a payout no longer PENDING, whichever way
-- it had finished: a worker recording the bank's "paid" for a payout already RETURNED (its
-- money credited back to the wallet), or "refused" for one already SETTLED, could not tell
-- that answer from a harmless repeat, and counted it as finished with nothing logged. The
-- reply of ALREADY_FINISHED is now the payout's withdrawal row as it stands, built as their OK
-- reply is (row_to_json of the wallet_transactions row), read under the payout's row lock:
-- COMPLETED for a SETTLED payout (REVERSED, should a completed one ever be reversed), FAILED
-- for a RETURNED one (each function sets both in one transaction, and t0017's triggers keep a
-- finished payout as it is); the worker compares it with the bank's answer. It is a
-- transaction row because the previous release's adapter parses any reply as one: it reads
-- the row and goes on as before, during a rolling deploy (a {"status": ...} reply would make
-- it fail, and abandon its round, on every contradiction). Nothing else changes: a finished
-- payout is still left as it is. Otherwise functions.sql's transfer_settle_payout and t0012's
-- transfer_return_payout (t0012_upgrade.sql), byte for byte; CREATE OR REPLACE keeps their
-- owners and privileges.

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
    IF p.status <> 'PENDING' THEN
        outcome := 'ALREADY_FINISHED';
        SELECT row_to_json(t)::text INTO reply FROM wallet_transactions AS t
        WHERE t.id = p_transaction_id;
        RETURN NEXT; RETURN;
    END IF;
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
    v_now timestamptz;
    v_movement uuid := gen_random_uuid();
    v_credit uuid := gen_random_uuid();
    v_reference text;
    v_after bigint;
BEGIN
    SELECT * INTO p FROM payouts WHERE payouts.transaction_id = p_transaction_id FOR UPDATE;
    IF NOT FOUND THEN outcome := 'NOT_FOUND'; RETURN NEXT; RETURN; END IF;
    IF p.status <> 'PENDING' THEN
        outcome := 'ALREADY_FINISHED';
        SELECT row_to_json(u)::text INTO reply FROM wallet_transactions AS u
        WHERE u.id = p_transaction_id;
        RETURN NEXT; RETURN;
    END IF;
    SELECT id, user_id, display_name, balance INTO w
    FROM wallets WHERE id = p.wallet_id FOR UPDATE;
    v_now := clock_timestamp();
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
