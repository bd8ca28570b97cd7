-- The common case of a keyed PIN check (adapters/pins_pg.py), each phase ONE call: the
-- caller runs `SELECT ... FROM wallet_pin_xxx(...)` as a single statement outside any
-- explicit transaction, so its implicit transaction commits before the answer reaches it.
-- Each function does what the adapter's explicit transaction did before w0003: the same
-- advisory locks, conditions, counter updates and idempotency rows, in the same order.
--
-- The advisory locks are taken in a statement of their own: this is a VOLATILE PL/pgSQL
-- function, so under READ COMMITTED each later statement reads with a snapshot taken after
-- they were granted (as `SqlIdempotencyRecords.claim` does). Anything but the common case
-- answers no row / false having written nothing (the use case takes the general path,
-- service_layer/pins.py). A unique violation on the idempotency insert fails the statement
-- and so undoes the counted attempt.
--
-- SECURITY INVOKER: they run with the app role's own grants on wallets, wallet_freezes,
-- wallet_pins (SELECT, UPDATE) and idempotency_records (SELECT, INSERT). search_path is
-- pinned with pg_catalog first. Applied by migration w0003; its downgrade drops them.

-- Phase one: counts the attempt of an ACTIVE, unfrozen wallet with attempts left whose keys
-- (the request's and the "#reserve" one) have no stored reply, and stores the reservation
-- under the "#reserve" key. The reply is `DataclassCodec(PinReservation).dumps(...)` byte
-- for byte: keys sorted, no spaces, the datetime as Python's isoformat() of a UTC datetime
-- (microseconds only when not zero, "+00:00").
CREATE FUNCTION wallet_pin_reserve(
    p_user_id text,
    p_caller text,
    p_request_id uuid,
    p_method text,
    p_now timestamptz,
    p_max_attempts integer,
    p_active text,
    p_lock bigint,
    p_reserve_lock bigint,
    p_reserve_caller text,
    p_reserve_method text,
    p_reserve_request_id uuid,
    p_reserve_fingerprint text
) RETURNS TABLE (
    r_wallet_id text, r_attempt integer, r_pin_hash text, r_pin_updated_at timestamptz
)
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_utc timestamp;
BEGIN
    IF NOT (pg_try_advisory_xact_lock(p_lock) AND pg_try_advisory_xact_lock(p_reserve_lock))
    THEN
        RETURN;
    END IF;
    WITH target AS (
        SELECT w.id FROM wallets w
        WHERE w.user_id = p_user_id AND w.status = p_active
          AND NOT EXISTS (SELECT 1 FROM wallet_freezes f WHERE f.wallet_id = w.id)
          AND NOT EXISTS (SELECT 1 FROM idempotency_records r
                          WHERE r.caller = p_caller AND r.request_id = p_request_id
                            AND r.method IN (p_method, p_reserve_method))
        FOR UPDATE OF w
    )
    UPDATE wallet_pins p
    SET failed_attempts = p.failed_attempts + 1, last_attempt_at = p_now
    FROM target
    WHERE p.wallet_id = target.id AND p.failed_attempts < p_max_attempts
    RETURNING p.wallet_id, p.failed_attempts, p.pin_hash, p.updated_at
    INTO r_wallet_id, r_attempt, r_pin_hash, r_pin_updated_at;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_utc := r_pin_updated_at AT TIME ZONE 'UTC';
    INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply)
    VALUES (
        p_reserve_caller, p_reserve_method, p_reserve_request_id, p_reserve_fingerprint,
        convert_to(
            '{"attempt":' || r_attempt::text
            || ',"pin_updated_at":"' || to_char(v_utc, 'YYYY-MM-DD"T"HH24:MI:SS')
            || CASE WHEN to_char(v_utc, 'US') = '000000' THEN ''
                    ELSE '.' || to_char(v_utc, 'US') END
            || '+00:00","wallet_id":' || to_json(r_wallet_id)::text || '}',
            'UTF8'
        )
    );
    RETURN NEXT;
END
$$;

-- Phase three for a right PIN: clears the counter of the reserved wallet while it is ACTIVE
-- without freezes, its PIN is still the one checked and the key has no reply, and stores
-- `p_reply` (the OK outcome) under the key. False, having written nothing, otherwise.
CREATE FUNCTION wallet_pin_settle_match(
    p_wallet_id text,
    p_pin_updated_at timestamptz,
    p_active text,
    p_lock bigint,
    p_caller text,
    p_method text,
    p_request_id uuid,
    p_fingerprint text,
    p_reply bytea
) RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_lock) THEN
        RETURN false;
    END IF;
    WITH target AS (
        SELECT w.id FROM wallets w
        WHERE w.id = p_wallet_id AND w.status = p_active
          AND NOT EXISTS (SELECT 1 FROM wallet_freezes f WHERE f.wallet_id = w.id)
          AND NOT EXISTS (SELECT 1 FROM idempotency_records r
                          WHERE r.caller = p_caller AND r.request_id = p_request_id
                            AND r.method = p_method)
        FOR UPDATE OF w
    )
    UPDATE wallet_pins p SET failed_attempts = 0
    FROM target
    WHERE p.wallet_id = target.id AND p.updated_at = p_pin_updated_at;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply)
    VALUES (p_caller, p_method, p_request_id, p_fingerprint, p_reply);
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION
    wallet_pin_reserve(text, text, uuid, text, timestamptz, integer, text, bigint, bigint,
                       text, text, uuid, text),
    wallet_pin_settle_match(text, timestamptz, text, bigint, text, text, uuid, text, bytea)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    wallet_pin_reserve(text, text, uuid, text, timestamptz, integer, text, bigint, bigint,
                       text, text, uuid, text),
    wallet_pin_settle_match(text, timestamptz, text, bigint, text, text, uuid, text, bytea)
TO __APP_ROLE__;
