-- Migration t0027's downgrade: the rollup's tables go (GetTransferStats of the previous
-- release counts every movement of the month again).

DROP TABLE IF EXISTS transfer_stats_rollup;
DROP TABLE IF EXISTS transfer_stats_hourly;
