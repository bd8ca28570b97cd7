-- What the app role may do to the audit tables: nothing directly (no INSERT privilege), only
-- call these SECURITY DEFINER functions, which assign sequence, time, transaction id, position
-- and the link to the head themselves. search_path is pinned and every name is qualified, so a
-- caller cannot slip its own objects in.

CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION audit_append(
    p_actor_id text,
    p_actor_role text,
    p_action text,
    p_target_type text,
    p_target_id text,
    p_request_id text,
    p_details jsonb
) RETURNS bigint
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO public.audit_events (
        sequence, created_at, xact_id, actor_id, actor_role, action, target_type, target_id,
        request_id, details
    )
    VALUES (
        nextval('public.audit_events_sequence_seq'), clock_timestamp(), pg_current_xact_id(),
        p_actor_id, p_actor_role, p_action, p_target_type, p_target_id, p_request_id, p_details
    )
    RETURNING sequence
$$;

-- Appends one seal at the next dense position, linked to the current head. The caller computes
-- row_hash (it holds the key, the database does not); a wrong hash is not refused here, it is
-- caught by the verifier, and the chain simply continues from it. Sealers serialise on the
-- advisory lock below (audit/sealer.py takes it with pg_try_advisory_xact_lock first); writers
-- never take it.
CREATE FUNCTION audit_seal(p_sequence bigint, p_prev_hash text, p_row_hash text) RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    head_position bigint;
    head_hash text;
    row_xact xid8;
BEGIN
    PERFORM pg_advisory_xact_lock(6219542919872988492);
    SELECT s.position, s.row_hash INTO head_position, head_hash
        FROM public.audit_seals AS s
        ORDER BY s.position DESC
        LIMIT 1;
    IF NOT FOUND THEN
        head_position := 0;
        head_hash := repeat('0', 64);
    END IF;
    IF p_prev_hash IS DISTINCT FROM head_hash THEN
        RAISE EXCEPTION 'audit_seal: prev_hash is not the head of the chain (position %)',
            head_position USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.xact_id INTO row_xact FROM public.audit_events AS e WHERE e.sequence = p_sequence;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit_seal: no audit row with sequence %', p_sequence
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF row_xact >= pg_snapshot_xmin(pg_current_snapshot()) THEN
        RAISE EXCEPTION 'audit_seal: the transaction of row % may still be running', p_sequence
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO public.audit_seals (position, sequence, prev_hash, row_hash, sealed_at)
        VALUES (head_position + 1, p_sequence, p_prev_hash, p_row_hash, clock_timestamp());
    RETURN head_position + 1;
END
$$;
