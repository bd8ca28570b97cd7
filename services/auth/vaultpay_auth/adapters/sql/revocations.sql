-- The revocation feed (vaultpay_auth/adapters/revocations.py reads it; docs/decisions.md).
-- Every session revocation, whatever wrote it (logout, refresh-token reuse, password change,
-- role change, deactivation, the CLI, an operator's UPDATE), becomes one row in the same
-- transaction, through the trigger below: the feed cannot miss a path that forgot to write it.

CREATE TABLE session_revocations (
    sequence bigserial PRIMARY KEY,
    -- The top-level transaction that revoked the session: the feed re-reads everything at or
    -- above the oldest transaction still running, so a slow commit is never skipped.
    xact_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    session_id uuid NOT NULL,
    user_id uuid NOT NULL,
    revoked_at timestamptz NOT NULL,
    reason text NOT NULL,
    -- When the row was written (clock_timestamp, not the transaction's start): what the feed's
    -- look-back window and the purge compare.
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX session_revocations_xact_idx ON session_revocations (xact_id, sequence);
CREATE INDEX session_revocations_recorded_idx ON session_revocations (recorded_at);

CREATE FUNCTION sessions_feed_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_revocations (session_id, user_id, revoked_at, reason)
    VALUES (NEW.id, NEW.user_id, NEW.revoked_at, NEW.revoke_reason);
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_feed_revocation
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION sessions_feed_revocation();

-- Sessions revoked shortly before this migration: their tokens may still be unexpired.
-- CREATE TRIGGER above took SHARE ROW EXCLUSIVE on sessions, held to the commit: this scan
-- runs under it (sign-ins, refreshes and logouts wait for it), which is what makes it see
-- every revocation committed before the trigger and none the trigger also writes. The wait
-- for that lock is bounded by the migration's lock_timeout (vaultpay_common.migrations).
INSERT INTO session_revocations (session_id, user_id, revoked_at, reason)
SELECT id, user_id, revoked_at, revoke_reason FROM sessions
WHERE revoked_at > now() - interval '1 hour'
ORDER BY revoked_at;

GRANT SELECT, INSERT, DELETE ON session_revocations TO __APP_ROLE__;
GRANT USAGE ON SEQUENCE session_revocations_sequence_seq TO __APP_ROLE__;
