-- Migration t0025's downgrade: PUBLIC may EXECUTE the close guard's trigger function again
-- (PostgreSQL's default, as t0003 left it).

GRANT EXECUTE ON FUNCTION transfer_refuse_close_with_pending_withdrawal() TO PUBLIC;
