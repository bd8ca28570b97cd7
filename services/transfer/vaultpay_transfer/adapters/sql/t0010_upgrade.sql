-- Migration t0010: the ledger's idempotency claim and record take transfer's methods only.
--
-- transfer_send_money, transfer_top_up and transfer_withdraw (and the held two, which call
-- them) are SECURITY DEFINER: they read and write idempotency_records as the table's owner,
-- whom its row-level security does not bind. t0002's transfer_claim and transfer_remember
-- used whatever p_method their caller passed, so transfer's role could probe another
-- service's stored answer (a REPLAY or IDEMPOTENCY_KEY_REUSED for wallet's or kyc's key) or
-- store a record under another service's method, which its own policy
-- (`idempotency_transfer`, t0009) refuses it. Both now refuse, insufficient_privilege, a method
-- outside transfer's gRPC package ('/vaultpay.transfer.', the prefix PostgreSQL's `service`
-- column reads as 'transfer'), before any lock, read or write: the movement fails and writes
-- nothing. Otherwise t0002's functions (functions.sql), unchanged; CREATE OR REPLACE keeps their
-- owner and privileges (protect.sql: no role but the owner may execute them directly).

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
    IF p_method IS NULL OR left(p_method, 19) <> '/vaultpay.transfer.' THEN
        RAISE EXCEPTION 'the ledger keeps transfer''s idempotency records only, not method %',
            quote_nullable(p_method)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
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

CREATE OR REPLACE FUNCTION transfer_remember(
    p_caller text, p_method text, p_request_id uuid, p_fingerprint text, p_reply text
) RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF p_method IS NULL OR left(p_method, 19) <> '/vaultpay.transfer.' THEN
        RAISE EXCEPTION 'the ledger keeps transfer''s idempotency records only, not method %',
            quote_nullable(p_method)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply)
    VALUES (p_caller, p_method, p_request_id, p_fingerprint, convert_to(p_reply, 'UTF8'));
END
$$;
