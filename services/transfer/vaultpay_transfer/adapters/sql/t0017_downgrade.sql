DROP TRIGGER payouts_never_truncated ON payouts;
DROP TRIGGER payouts_never_deleted ON payouts;
DROP TRIGGER payouts_change_along_their_progress ON payouts;
DROP FUNCTION transfer_check_payout_change();
