-- Migration t0025: nobody but the owner may EXECUTE the close guard's trigger function.
--
-- t0003 created transfer_refuse_close_with_pending_withdrawal() with PostgreSQL's default
-- privileges, EXECUTE to PUBLIC, and t0007 made it SECURITY DEFINER (it reads
-- wallet_transactions as the owner, so wallet's role closing a wallet needs no privilege on
-- the ledger). Any role of the database could then attach it to a table of its own: kyc's
-- role (TEMPORARY on the database) could create a TEMP table with a column `id` and a
-- trigger EXECUTE FUNCTION public.transfer_refuse_close_with_pending_withdrawal(), insert a
-- wallet id and learn from the check_violation whether that wallet has a withdrawal being
-- paid out: a read of the ledger it holds no grant of (review, 2026-12-05).
--
-- CREATE TRIGGER needs EXECUTE of its function; a trigger firing does not. Revoking it from
-- PUBLIC leaves the function to its owner, and t0003's trigger on `wallets` (created by the
-- owner) still fires for wallet's role's close and refuses it while a withdrawal is PENDING.
-- No other role ever held EXECUTE of it (t0007 moved none).
--
-- The downgrade (t0025_downgrade.sql) gives PUBLIC its EXECUTE back.

REVOKE EXECUTE ON FUNCTION transfer_refuse_close_with_pending_withdrawal() FROM PUBLIC;
