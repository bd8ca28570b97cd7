-- Migration t0006: a daily limit's refusal also tells the month's limit and usage.
--
-- A movement refused today may pass tomorrow only if the month allows it: the month still holds
-- today's usage after the day resets. With both windows' figures the service tells the client
-- to retry when the movement would go through: at the day's end, at the month's end when the
-- month's limit would refuse it too, or never when the amount is above the month's whole limit
-- (`vaultpay_transfer.domain.outcomes`). The same refusals, under the same lock; only the daily
-- reply has two more keys.

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
                                   'used_minor', v_day_used::text, 'currency', p_currency,
                                   'monthly_limit_minor', c.monthly::text,
                                   'monthly_used_minor', v_month_used::text)::text;
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
