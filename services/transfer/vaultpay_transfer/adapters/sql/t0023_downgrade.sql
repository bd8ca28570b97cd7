-- Migration t0023's downgrade: the look-up function goes (the adapter of the release before
-- t0023 runs its own statement); the three money functions are t0016's send and withdraw and
-- t0020's top-up again, read from their own files (ddl.py).

DROP FUNCTION transfer_hold_lookup(text, text, uuid, bigint);
