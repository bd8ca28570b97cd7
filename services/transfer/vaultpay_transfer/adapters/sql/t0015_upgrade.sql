-- Migration t0015: the staff listing's rare filters get partial indexes of their own.
--
-- AdminListTransactions (SqlTransactionStore.list without a user or a wallet) filtered by a
-- rare category or a rare status walked wallet_transactions_created_idx (every row, newest
-- first) until it had a page: the table is almost all P2P_SEND/P2P_RECEIVE rows COMPLETED, so
-- a page of REVERSAL rows read as much of the index as it took to find them, the whole index
-- when there were none. Each index below holds the rare rows only, newest first per category
-- (status): a page reads one range of it, whatever the size of the table.
--
-- SendMoney writes neither: it inserts a P2P_SEND and a P2P_RECEIVE row, both COMPLETED, which
-- neither predicate admits, so the hot path gets no index maintenance. (A top-up, a withdrawal,
-- its return, a refund or a reversal writes one more index entry.) PENDING keeps t0001's
-- wallet_transactions_pending_idx.
--
-- The listing states each predicate as literal SQL (never a bind parameter): asyncpg prepares
-- every statement, and a generic plan cannot prove a partial index's predicate from
-- `category = $1`. The predicates here and there must stay identical.
--
-- CONCURRENTLY (sends go on while each is built, the migration waits for the transactions
-- running when it starts), so outside a transaction: the migration runs them in Alembic's
-- autocommit block. A build that failed leaves an INVALID index behind; the DROP first makes
-- running the migration again build it again.

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_category_idx;
CREATE INDEX CONCURRENTLY wallet_transactions_rare_category_idx
    ON wallet_transactions (category, created_at DESC, id DESC)
    WHERE category NOT IN ('P2P_SEND', 'P2P_RECEIVE');

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_status_idx;
CREATE INDEX CONCURRENTLY wallet_transactions_rare_status_idx
    ON wallet_transactions (status, created_at DESC, id DESC)
    WHERE status IN ('FAILED', 'REVERSED');
