-- Migration t0005's downgrade: the held movements' functions go (t0004's service calls the
-- money functions directly).
DROP FUNCTION transfer_withdraw_held(text, text, uuid, text, bigint, text, bigint, text, text,
                                     text, text, text);
DROP FUNCTION transfer_send_money_held(text, text, uuid, text, bigint, text, text, bigint, text,
                                       text);
DROP FUNCTION transfer_pass_hold(bigint);
