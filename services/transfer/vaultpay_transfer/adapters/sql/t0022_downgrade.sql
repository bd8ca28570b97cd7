-- Migration t0022's downgrade: transfer's role no longer reads `wallet_freezes` (a
-- column-level REVOKE: where one role serves wallet too, its grant of the whole table stays).
REVOKE SELECT (wallet_id, source, until) ON wallet_freezes FROM __APP_ROLE__;
