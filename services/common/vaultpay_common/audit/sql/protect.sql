-- Append-only for everyone (the owner included: only disabling the triggers gets past them,
-- and the chain and the checkpoints catch what happens then). The app role reads both tables
-- and writes only through audit_append() and audit_seal(). __APP_ROLE__ is replaced by the
-- quoted name of the service's login role.

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_seals_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_seals_no_truncate
    BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

REVOKE ALL ON audit_events, audit_seals FROM PUBLIC;
REVOKE ALL ON audit_events, audit_seals FROM __APP_ROLE__;
GRANT SELECT ON audit_events, audit_seals TO __APP_ROLE__;
REVOKE ALL ON SEQUENCE audit_events_sequence_seq FROM PUBLIC;
REVOKE ALL ON SEQUENCE audit_events_sequence_seq FROM __APP_ROLE__;

REVOKE ALL ON FUNCTION audit_append(text, text, text, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_seal(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(text, text, text, text, text, text, jsonb)
    TO __APP_ROLE__;
GRANT EXECUTE ON FUNCTION audit_seal(bigint, text, text) TO __APP_ROLE__;
