-- Migration t0024: an owner's rare rows get a partial index of their own.
--
-- ListTransactions filtered by type, and AdminListTransactions of one wallet filtered by a
-- status other than COMPLETED or by type, read the owner's whole history through
-- wallet_transactions_user_idx (or _wallet_idx) and filtered it row by row: cheap while the
-- rows asked for are dense, but a hot wallet (ARCHITECTURE: half of all sends go to it)
-- that rarely sends holds millions of P2P_RECEIVE rows, and a page of its DEBIT rows, of its
-- PENDING withdrawals or of a type with none walked all of them (review, 2026-12-04).
--
-- This index holds an owner's rows that are not a COMPLETED P2P side: its top-ups,
-- withdrawals, refunds and reversals, and any row that is not COMPLETED (a P2P side reversed
-- later included). The listing (SqlTransactionStore.list) reads a status other than COMPLETED
-- from it alone, and a type as two ranges merged: the P2P category of that type on
-- wallet_transactions_user_category_idx, the rest of the type's rows here. A staff listing of
-- one wallet reads its owner's indexes (wallets.user_id is unique: a wallet's rows are its
-- owner's).
--
-- SendMoney writes no entry: it inserts a P2P_SEND and a P2P_RECEIVE row, both COMPLETED,
-- which the predicate does not admit, so the hot path gets no index maintenance.
--
-- The listing states the predicate as literal SQL (asyncpg prepares every statement, and a
-- generic plan cannot prove a partial index's predicate from parameters); the two must stay
-- identical. Built CONCURRENTLY (sends go on), outside a transaction; a build that failed
-- leaves an INVALID index, which the DROP first builds again on a second run.

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_user_rare_idx;
CREATE INDEX CONCURRENTLY wallet_transactions_user_rare_idx
    ON wallet_transactions (user_id, created_at DESC, id DESC)
    WHERE category NOT IN ('P2P_SEND', 'P2P_RECEIVE') OR status <> 'COMPLETED';

