-- Migration t0003: a wallet with a withdrawal still being paid out cannot be closed.
--
-- transfer_withdraw moves the money into sys:payouts_in_flight at once and leaves the
-- withdrawal PENDING until the payout worker settles it or returns it; a returned payout
-- credits the wallet. A wallet closed meanwhile (the withdrawal of its whole balance leaves it
-- at zero) would receive money after it closed. This trigger refuses the close instead, with
-- check_violation on the constraint name wallets_close_without_pending_withdrawal, which
-- wallet's repository maps to WALLET_HAS_PENDING_WITHDRAWAL.
--
-- Race-free: transfer_withdraw inserts the PENDING row holding the wallet's row lock
-- (SELECT ... FOR UPDATE), and the close is an UPDATE of that row (wallet reads it FOR UPDATE
-- first). Whichever comes second waits for the first to commit: a withdrawal after the close
-- sees CLOSED and is refused (WALLET_CLOSED); a close after the withdrawal runs this check
-- with a snapshot taken after the withdrawal committed, and sees its row.

CREATE FUNCTION transfer_refuse_close_with_pending_withdrawal() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM wallet_transactions AS t
               WHERE t.wallet_id = NEW.id AND t.category = 'WITHDRAW'
                 AND t.status = 'PENDING') THEN
        RAISE EXCEPTION 'wallet % has a withdrawal still being paid out; it cannot be closed',
            NEW.id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'wallets_close_without_pending_withdrawal',
                  TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER wallets_close_without_pending_withdrawal
    BEFORE UPDATE OF status ON wallets
    FOR EACH ROW
    WHEN (NEW.status = 'CLOSED' AND OLD.status IS DISTINCT FROM 'CLOSED')
    EXECUTE FUNCTION transfer_refuse_close_with_pending_withdrawal();
