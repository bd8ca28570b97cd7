-- Migration t0020: transfer_caps fails closed when a tier default is missing, whatever the
-- user's own limit.
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
