-- The audit log of one database (see vaultpay_common/audit/__init__.py for the design).
-- audit_events: one row per audited action, appended by audit_append() in the action's own
-- transaction. audit_seals: the hash chain over those rows, appended by audit_seal() afterwards.
-- Both are append-only (protect.sql).

CREATE SEQUENCE audit_events_sequence_seq AS bigint;

CREATE TABLE audit_events (
    sequence bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    -- The top-level transaction that inserted the row: the sealer only chains rows whose
    -- transaction has finished (xact_id below the oldest running transaction).
    xact_id xid8 NOT NULL,
    actor_id text NOT NULL,
    actor_role text NOT NULL,
    action text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    request_id text NOT NULL,
    details jsonb NOT NULL CONSTRAINT audit_events_details_object
        CHECK (jsonb_typeof(details) = 'object')
);

ALTER SEQUENCE audit_events_sequence_seq OWNED BY audit_events.sequence;

CREATE INDEX audit_events_xact_idx ON audit_events (xact_id);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, sequence);
CREATE INDEX audit_events_target_idx ON audit_events (target_id, sequence);
CREATE INDEX audit_events_created_idx ON audit_events (created_at);

CREATE TABLE audit_seals (
    -- Dense from 1: the chain order. Assigned by audit_seal(), never by the caller.
    position bigint PRIMARY KEY CONSTRAINT audit_seals_position_positive CHECK (position > 0),
    sequence bigint NOT NULL UNIQUE REFERENCES audit_events (sequence),
    prev_hash text NOT NULL CONSTRAINT audit_seals_prev_hash_hex
        CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    row_hash text NOT NULL CONSTRAINT audit_seals_row_hash_hex
        CHECK (row_hash ~ '^[0-9a-f]{64}$'),
    sealed_at timestamptz NOT NULL
);
