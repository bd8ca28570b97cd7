-- What holds the ledger together in the database itself, whoever writes (the app role cannot
-- write these tables at all; the owner is held by the triggers too, and AdminVerifyLedger
-- catches whatever disabling them would let through). __APP_ROLE__ is replaced by the quoted
-- name of the service's login role.

CREATE FUNCTION transfer_refuse_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Each INSERT into ledger_postings must balance by itself: per movement and currency, the
-- new postings sum to zero (the functions write a movement's postings in one statement).
CREATE FUNCTION transfer_check_postings_balance() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_unbalanced uuid;
BEGIN
    SELECT n.ledger_transaction_id INTO v_unbalanced
    FROM new_postings AS n
    GROUP BY n.ledger_transaction_id, n.currency
    HAVING sum(n.amount) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'postings of ledger transaction % do not sum to zero', v_unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

-- A wallet-side transaction row changes only along its status transitions
-- (PENDING -> COMPLETED | FAILED, COMPLETED -> REVERSED), with reversed_amount only growing
-- and completed_at set once; nothing else about it ever changes, and it is never deleted.
CREATE FUNCTION transfer_check_transaction_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (to_jsonb(NEW) - 'status' - 'reversed_amount' - 'completed_at')
       IS DISTINCT FROM (to_jsonb(OLD) - 'status' - 'reversed_amount' - 'completed_at') THEN
        RAISE EXCEPTION 'wallet_transactions rows are immutable apart from their status'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'PENDING' AND NEW.status IN ('COMPLETED', 'FAILED'))
        OR (OLD.status = 'COMPLETED' AND NEW.status = 'REVERSED')) THEN
        RAISE EXCEPTION 'wallet_transactions: % -> % is not a status transition',
            OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.reversed_amount < OLD.reversed_amount THEN
        RAISE EXCEPTION 'wallet_transactions: reversed_amount never decreases'
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.completed_at IS NOT NULL AND NEW.completed_at IS DISTINCT FROM OLD.completed_at THEN
        RAISE EXCEPTION 'wallet_transactions: completed_at is set once'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

-- wallets.balance is the ledger's: only the owner (whom the SECURITY DEFINER money functions
-- run as) may change it; the app role, which wallet also runs as, may not. A new wallet
-- starts at zero.
CREATE FUNCTION transfer_guard_wallet_balance() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- True for the owner (and superusers); the app role is no member of the owner.
    IF NOT pg_has_role(current_user,
                       (SELECT c.relowner FROM pg_class AS c WHERE c.oid = TG_RELID),
                       'USAGE') THEN
        IF TG_OP = 'INSERT' AND NEW.balance <> 0 THEN
            RAISE EXCEPTION 'a wallet starts with a zero balance; money moves through the ledger'
                USING ERRCODE = 'insufficient_privilege';
        ELSIF TG_OP = 'UPDATE' AND NEW.balance IS DISTINCT FROM OLD.balance THEN
            RAISE EXCEPTION 'wallets.balance changes only through the ledger functions'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_postings_balanced
    AFTER INSERT ON ledger_postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION transfer_check_postings_balance();

CREATE TRIGGER ledger_postings_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION transfer_refuse_change();
CREATE TRIGGER ledger_postings_no_truncate
    BEFORE TRUNCATE ON ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION transfer_refuse_change();

CREATE TRIGGER ledger_transactions_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION transfer_refuse_change();
CREATE TRIGGER ledger_transactions_no_truncate
    BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION transfer_refuse_change();

CREATE TRIGGER top_up_payments_no_update_delete
    BEFORE UPDATE OR DELETE ON top_up_payments
    FOR EACH ROW EXECUTE FUNCTION transfer_refuse_change();
CREATE TRIGGER top_up_payments_no_truncate
    BEFORE TRUNCATE ON top_up_payments
    FOR EACH STATEMENT EXECUTE FUNCTION transfer_refuse_change();

CREATE TRIGGER wallet_transactions_status_only
    BEFORE UPDATE ON wallet_transactions
    FOR EACH ROW EXECUTE FUNCTION transfer_check_transaction_change();
CREATE TRIGGER wallet_transactions_no_delete
    BEFORE DELETE ON wallet_transactions
    FOR EACH ROW EXECUTE FUNCTION transfer_refuse_change();
CREATE TRIGGER wallet_transactions_no_truncate
    BEFORE TRUNCATE ON wallet_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION transfer_refuse_change();

CREATE TRIGGER wallets_balance_through_ledger
    BEFORE INSERT OR UPDATE OF balance ON wallets
    FOR EACH ROW EXECUTE FUNCTION transfer_guard_wallet_balance();

-- The app role reads everything and writes nothing directly.
REVOKE ALL ON ledger_transactions, ledger_postings, wallet_transactions, top_up_payments,
    payouts, limit_usage FROM PUBLIC;
REVOKE ALL ON ledger_transactions, ledger_postings, wallet_transactions, top_up_payments,
    payouts, limit_usage FROM __APP_ROLE__;
GRANT SELECT ON ledger_transactions, ledger_postings, wallet_transactions, top_up_payments,
    payouts, limit_usage TO __APP_ROLE__;

REVOKE ALL ON FUNCTION
    transfer_new_reference(),
    transfer_claim(text, text, uuid, text, bigint),
    transfer_is_frozen(text, text),
    transfer_business_day(timestamptz),
    transfer_caps(text, text, text),
    transfer_limit_refusal(text, text, text, bigint, date, text),
    transfer_count_usage(text, text, date, bigint),
    transfer_open_movement(uuid, text, text, bigint, timestamptz, boolean),
    transfer_notify(text, text, jsonb),
    transfer_remember(text, text, uuid, text, text),
    transfer_state_refusal(text, text),
    transfer_send_money(text, text, uuid, text, bigint, text, text, bigint, text, text),
    transfer_top_up(text, text, uuid, text, bigint, text, bigint, text, text, text, text),
    transfer_withdraw(text, text, uuid, text, bigint, text, bigint, text, text, text, text,
                      text),
    transfer_lease_payouts(integer, double precision),
    transfer_settle_payout(uuid),
    transfer_return_payout(uuid, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    transfer_caps(text, text, text),
    transfer_send_money(text, text, uuid, text, bigint, text, text, bigint, text, text),
    transfer_top_up(text, text, uuid, text, bigint, text, bigint, text, text, text, text),
    transfer_withdraw(text, text, uuid, text, bigint, text, bigint, text, text, text, text,
                      text),
    transfer_lease_payouts(integer, double precision),
    transfer_settle_payout(uuid),
    transfer_return_payout(uuid, text)
TO __APP_ROLE__;
