-- Migration t0018: GetTransferStats finds the rare categories' counted movements by the time
-- they completed.
--
-- GetTransferStats (SqlTransactionStore.stats) counts the movements completed in the last 24
-- hours and 30 days: rows COMPLETED or REVERSED, the DEBIT side or the CREDIT of a TOP_UP. It
-- selected them by created_at, so a withdrawal created 25 hours ago and settled an hour ago was
-- missing from the day's figures (a withdrawal stays PENDING for its hold, the bank's time, the
-- retries, a staff freeze's hold). It now selects them by completed_at, in two parts:
--
-- * P2P rows complete at creation: transfer_send_money inserts both sides COMPLETED with
--   completed_at = created_at (its one v_now), and protect.sql lets completed_at be set only
--   once, so a P2P_SEND is found by created_at on wallet_transactions_created_idx (t0001);
-- * the rare categories (TOP_UP, WITHDRAW, REFUND, REVERSAL) complete later or not at all: the
--   index below holds their counted rows by completed_at.
--
-- Partial, for the counted rare rows only: SendMoney inserts a P2P_SEND and a P2P_RECEIVE row,
-- which the predicate refuses, so the hot path gets no index maintenance; a pending withdrawal
-- enters it when it settles (status and completed_at change then), a top-up when it is made.
-- The stats statement states the predicate literally (never a bind parameter: asyncpg
-- prepares every statement and a generic plan cannot prove a predicate from parameters). The
-- predicates here and there must stay identical.
--
-- CONCURRENTLY (sends go on while it is built), so outside a transaction: the migration runs
-- it in Alembic's autocommit block. A build that failed leaves an INVALID index behind; the
-- DROP first makes running the migration again build it again.

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_completed_idx;
CREATE INDEX CONCURRENTLY wallet_transactions_rare_completed_idx
    ON wallet_transactions (completed_at)
    WHERE category NOT IN ('P2P_SEND', 'P2P_RECEIVE')
      AND status IN ('COMPLETED', 'REVERSED')
      AND (type = 'DEBIT' OR category = 'TOP_UP');
