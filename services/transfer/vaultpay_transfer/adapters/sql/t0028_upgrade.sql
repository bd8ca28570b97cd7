-- Migration t0028: the payouts the bank returned get partial indexes of their own.
--
-- A refused payout is credited back as a WITHDRAW CREDIT row. A staff listing of
-- `category=WITHDRAW&type=CREDIT` (the returned payouts) read t0015's index of every rare
-- category and filtered its WITHDRAW debits and top-ups away row by row, and an owner's the
-- owner's every withdrawal (wallet_transactions_user_category_idx): a page's cost grew with
-- every withdrawal ever made, or with the owner's (review, 2026-12-05). These two indexes hold
-- the returns alone, everyone's by time and each owner's by time; only a return, rare, writes
-- an entry (SendMoney, top-ups and withdrawals none).
--
-- The listing states the predicate as literal SQL (asyncpg prepares every statement, and a
-- generic plan cannot prove a partial index's predicate from parameters); the two must stay
-- identical (`_PAYOUT_RETURN` in transactions_sql.py). Built CONCURRENTLY (sends go on),
-- outside a transaction; a build that failed leaves an INVALID index, which the DROP first
-- builds again on a second run.

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_payout_returns_idx;
CREATE INDEX CONCURRENTLY wallet_transactions_payout_returns_idx
    ON wallet_transactions (created_at DESC, id DESC)
    WHERE category = 'WITHDRAW' AND type = 'CREDIT';
DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_user_payout_returns_idx;
CREATE INDEX CONCURRENTLY wallet_transactions_user_payout_returns_idx
    ON wallet_transactions (user_id, created_at DESC, id DESC)
    WHERE category = 'WITHDRAW' AND type = 'CREDIT';
