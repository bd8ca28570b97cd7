-- Migration w0003's downgrade: the PIN check functions of pin_check.sql.
DROP FUNCTION IF EXISTS wallet_pin_settle_match(
    text, timestamptz, text, bigint, text, text, uuid, text, bytea);
DROP FUNCTION IF EXISTS wallet_pin_reserve(
    text, text, uuid, text, timestamptz, integer, text, bigint, bigint, text, text, uuid, text);
