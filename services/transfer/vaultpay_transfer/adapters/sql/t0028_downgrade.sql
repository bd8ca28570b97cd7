-- Migration t0028's downgrade: both partial indexes go, CONCURRENTLY (a plain DROP INDEX would
-- take the table's ACCESS EXCLUSIVE lock and queue every send behind the readers before it).

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_user_payout_returns_idx;
DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_payout_returns_idx;
