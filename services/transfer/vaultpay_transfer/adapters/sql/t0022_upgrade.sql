-- Migration t0022: transfer's role may read which freezes hold a wallet.
--
-- A movement the ledger refuses WALLET_FROZEN (transfer_state_refusal: a TopUp into a frozen
-- wallet; a send or withdrawal whose wallet a freeze committed on after wallet's PIN check)
-- answered the bare code, while wallet's PIN check tells `freeze_reason` and `until` with it.
-- After such a refusal, and only then, transfer's ledger adapter reads the freeze that holds
-- the caller's wallet (in force, not a PIN lockout, staff's before the owner's) and answers
-- what wallet's check answers; the money functions do not change.
--
-- Transfer's role is granted SELECT of `wallet_freezes`' wallet_id, source and until only
-- (which freeze, and when it ends): not its note nor set_by (who among staff set it), and
-- nothing it could write. Read only, as t0007's and t0021's columns of `wallets`.
--
-- The downgrade (t0022_downgrade.sql) revokes the columns' grant: the adapter's read is then
-- refused, and it answers the bare WALLET_FROZEN again (a WARNING logged), unless one role
-- serves wallet too, whose own grant of the table keeps the read.

GRANT SELECT (wallet_id, source, until) ON wallet_freezes TO __APP_ROLE__;
