-- Migration t0002, run after functions.sql (the money functions of today, over t0001's).
--
-- wallet_transactions_ledger_idx goes: no query looks wallet-side rows up by their ledger
-- transaction (the two sides of a movement share its reference, which
-- wallet_transactions_reference_idx serves), and its foreign key never needs it either
-- (ledger_transactions rows are never updated or deleted: protect.sql), so it only cost two
-- index insertions per transfer.
--
-- Dropped CONCURRENTLY, outside the revision's transaction (after the functions committed): a
-- plain DROP INDEX takes ACCESS EXCLUSIVE on wallet_transactions, and its lock request queued
-- every movement behind the readers before it. IF EXISTS: the revision may run again after a
-- failure here (the functions are CREATE OR REPLACE).

DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_ledger_idx;
