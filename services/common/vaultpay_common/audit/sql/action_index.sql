-- The audit listing's action filter gets an index of its own (platform p0004, auth 0006).
--
-- list_audit_events (store.py) filters by action (and time) and reads newest first, keyset-
-- paginated on sequence: `WHERE action = $1 [AND sequence < $n] ORDER BY sequence DESC LIMIT n`.
-- tables.sql indexes actor and target that way, not action: a page filtered by action walked
-- the primary key backwards (or scanned the table) until it had a page, the whole table when no
-- row matched. `(action, sequence)` holds each action's rows in the listing's order: a page is
-- one range of it, read backwards from the keyset; the time filter is checked on those rows.
--
-- CONCURRENTLY (every audited action appends to the table while it builds), so outside a
-- transaction: the migrations run it in Alembic's autocommit block. A build that failed leaves
-- an INVALID index behind; the DROP first makes running the migration again build it again.

DROP INDEX CONCURRENTLY IF EXISTS audit_events_action_idx;
CREATE INDEX CONCURRENTLY audit_events_action_idx ON audit_events (action, sequence);
