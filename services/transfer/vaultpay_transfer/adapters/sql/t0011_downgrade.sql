-- Migration t0011's downgrade: the hold check and the column go (t0010's worker asks the bank
-- for every leased payout).
DROP FUNCTION transfer_hold_payout_if_frozen(uuid, double precision);
ALTER TABLE payouts DROP COLUMN held_since;
