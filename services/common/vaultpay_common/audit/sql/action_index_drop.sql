-- Undoes action_index.sql (a downgrade), CONCURRENTLY: outside a transaction too.

DROP INDEX CONCURRENTLY IF EXISTS audit_events_action_idx;
