-- Migration w0004's downgrade: the function of movement_check.sql.
DROP FUNCTION IF EXISTS wallet_pin_settle_movement(
    text, timestamptz, text, bigint, text, text, uuid, text, bytea,
    uuid, text, timestamptz, interval);
