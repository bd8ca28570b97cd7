-- t0003's downgrade: wallets may be closed with a withdrawal pending again.

DROP TRIGGER wallets_close_without_pending_withdrawal ON wallets;
DROP FUNCTION transfer_refuse_close_with_pending_withdrawal();
