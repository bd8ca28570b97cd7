-- A money movement's right PIN settled and its client address looked up in ONE call
-- (adapters/pins_pg.py, `PgPinCheckFastPath.settle_movement_match`), so the movement check of
-- SendMoney and Withdraw reads no Redis and costs no round trip for the address. Applied by
-- migration w0004; its downgrade drops it. `wallet_pin_settle_match` (w0003) stays as it
-- was: this function calls it, and a wallet of the previous release still does.
--
-- The address is looked at only once the PIN is settled as a match (as CheckIpTrust is asked
-- only then). A trusted address (`trusted_ips`, unexpired) answers r_ip_trusted, and its
-- `last_seen_at` moves forward when it is older than `p_seen_every` (the Redis cache kept it
-- as fresh). Anything else answers r_ip_trusted false having touched no address row, and the
-- use case takes CheckIpTrust's path, which mails the confirmation link.
--
-- SECURITY INVOKER, with the app role's grants (trusted_ips: SELECT, UPDATE). One statement
-- outside an explicit transaction: the implicit transaction commits before the answer.

CREATE FUNCTION wallet_pin_settle_movement(
    p_wallet_id text,
    p_pin_updated_at timestamptz,
    p_active text,
    p_lock bigint,
    p_caller text,
    p_method text,
    p_request_id uuid,
    p_fingerprint text,
    p_reply bytea,
    p_user_id uuid,
    p_ip_hash text,
    p_now timestamptz,
    p_seen_every interval,
    OUT r_settled boolean,
    OUT r_ip_trusted boolean
)
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    r_settled := wallet_pin_settle_match(p_wallet_id, p_pin_updated_at, p_active, p_lock,
                                         p_caller, p_method, p_request_id, p_fingerprint,
                                         p_reply);
    r_ip_trusted := false;
    IF NOT r_settled THEN
        RETURN;
    END IF;
    UPDATE trusted_ips SET last_seen_at = p_now
    WHERE user_id = p_user_id AND ip_hash = p_ip_hash AND expires_at > p_now
      AND last_seen_at < p_now - p_seen_every;
    IF FOUND THEN
        r_ip_trusted := true;
        RETURN;
    END IF;
    r_ip_trusted := EXISTS (SELECT 1 FROM trusted_ips
                            WHERE user_id = p_user_id AND ip_hash = p_ip_hash
                              AND expires_at > p_now);
END
$$;

REVOKE ALL ON FUNCTION
    wallet_pin_settle_movement(text, timestamptz, text, bigint, text, text, uuid, text, bytea,
                               uuid, text, timestamptz, interval)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    wallet_pin_settle_movement(text, timestamptz, text, bigint, text, text, uuid, text, bytea,
                               uuid, text, timestamptz, interval)
TO __APP_ROLE__;
