-- Migration t0024's downgrade: the partial index goes, CONCURRENTLY (a plain DROP INDEX would
-- take the table's ACCESS EXCLUSIVE lock and queue every send behind the readers before it).

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_user_rare_idx;
