-- Migration t0011's downgrade: the hold check and the column go (t0010's worker asks the bank
-- for every leased payout).
--
-- Dropping payouts.held_since drops its values, not backed up: which payouts are held, and
-- since when. After an upgrade again a payout still held reads as newly held (the worker logs
-- its hold once more). DROP COLUMN takes ACCESS EXCLUSIVE on payouts (the catalogue only,
-- nothing rewritten), waited for within the migration's lock_timeout.
DROP FUNCTION transfer_hold_payout_if_frozen(uuid, double precision);
ALTER TABLE payouts DROP COLUMN held_since;
