-- Undoes tables.sql, functions.sql and protect.sql (a migration's downgrade).

DROP TABLE IF EXISTS audit_seals;
DROP TABLE IF EXISTS audit_events;
DROP FUNCTION IF EXISTS audit_seal(bigint, text, text);
DROP FUNCTION IF EXISTS audit_append(text, text, text, text, text, text, jsonb);
DROP FUNCTION IF EXISTS audit_refuse_change();
