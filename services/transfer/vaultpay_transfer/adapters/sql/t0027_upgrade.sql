-- Migration t0027: GetTransferStats reads closed hours from a rollup.
--
-- GetTransferStats counted the movements completed in the last 30 days on every call: one
-- range of wallet_transactions_created_idx over a month of sends (both sides of each, half
-- discarded) and t0018's index for the rest. Its cost grew with the month's volume: at a
-- send a second, some 5 million rows a call, past wallet's 3 s peer deadline, and wallet's
-- GetSystemStats showed no transfer figures (review, 2026-12-04).
--
-- A job of transfer's (`SqlStatsRollup`, every TRANSFER_STATS_ROLLUP_SECONDS) adds each hour
-- that closed at least ten minutes ago to transfer_stats_hourly, per currency: how many
-- movements completed in it and their volume, counted as GetTransferStats counts them (a
-- send and a settled withdrawal by their debit, a top-up by its credit, a reversed one
-- still). The one row of transfer_stats_rollup says up to when (an hour boundary, UTC), and
-- both change in one transaction. GetTransferStats then reads the closed hours of its
-- windows here, and only the partial first hour and the tail after `rolled_until` (an hour
-- and some minutes) from wallet_transactions. The ten minutes cover a movement whose
-- completion time was taken before its COMMIT: a movement's transaction lasts milliseconds,
-- its statements at most the statement timeout.
--
-- Hours older than 31 days are deleted by the same job. Transfer's role writes both tables
-- (no one else reads them); the hour rows are the job's own derived figures, not money.

CREATE TABLE transfer_stats_hourly (
    hour timestamptz NOT NULL,
    currency text NOT NULL,
    movements bigint NOT NULL CHECK (movements > 0),
    volume_minor numeric NOT NULL CHECK (volume_minor > 0),
    PRIMARY KEY (hour, currency),
    CONSTRAINT transfer_stats_hourly_on_the_hour
        CHECK (hour = date_trunc('hour', hour, 'UTC'))
);

CREATE TABLE transfer_stats_rollup (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    rolled_until timestamptz
        CHECK (rolled_until IS NULL OR rolled_until = date_trunc('hour', rolled_until, 'UTC'))
);
INSERT INTO transfer_stats_rollup (only_row, rolled_until) VALUES (true, NULL);

GRANT SELECT, INSERT, DELETE ON transfer_stats_hourly TO __APP_ROLE__;
GRANT SELECT, UPDATE (rolled_until) ON transfer_stats_rollup TO __APP_ROLE__;
