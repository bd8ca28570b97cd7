-- A payout changes only along its own progress, whoever writes (the app role cannot write
-- payouts at all; this holds the money functions, which run as the owner, and the owner).
-- What a payout is (its movement, wallet, money, destination, creation time) never changes;
-- while PENDING the worker's bookkeeping moves (attempts, available_at, held_since,
-- failure_reason); it ends once, PENDING -> SETTLED | RETURNED, with its finished_at; a
-- finished payout never changes again, and no payout is deleted.

CREATE FUNCTION transfer_check_payout_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_jsonb(NEW) = to_jsonb(OLD) THEN
        RETURN NEW;
    END IF;
    IF OLD.status <> 'PENDING' THEN
        RAISE EXCEPTION 'payouts: a % payout never changes', OLD.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF (to_jsonb(NEW) - 'status' - 'attempts' - 'failure_reason' - 'available_at'
                      - 'finished_at' - 'held_since')
       IS DISTINCT FROM (to_jsonb(OLD) - 'status' - 'attempts' - 'failure_reason'
                         - 'available_at' - 'finished_at' - 'held_since') THEN
        RAISE EXCEPTION 'payouts rows are immutable apart from their progress'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status NOT IN ('PENDING', 'SETTLED', 'RETURNED') THEN
        RAISE EXCEPTION 'payouts: PENDING -> % is not a status transition', NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF (NEW.status = 'PENDING') <> (NEW.finished_at IS NULL) THEN
        RAISE EXCEPTION 'payouts: finished_at is set when, and only when, a payout ends'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER payouts_change_along_their_progress
    BEFORE UPDATE ON payouts
    FOR EACH ROW EXECUTE FUNCTION transfer_check_payout_change();
CREATE TRIGGER payouts_never_deleted
    BEFORE DELETE ON payouts
    FOR EACH ROW EXECUTE FUNCTION transfer_refuse_change();
CREATE TRIGGER payouts_never_truncated
    BEFORE TRUNCATE ON payouts
    FOR EACH STATEMENT EXECUTE FUNCTION transfer_refuse_change();
