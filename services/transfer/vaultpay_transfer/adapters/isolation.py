"""What the transfer chain grants transfer's own role, for `migrate` to reconcile at every run
with chain roles (`vaultpay_common.chain_isolation`; the chain's env.py passes it to `run_env`).

t0007 moved the ledger's grants from the group role once, and granted the columns of `wallets`
transfer reads. A database migrated to the head with one role for everything, then migrated
with `TRANSFER_DATABASE_CHAIN_ROLES` set, gets them moved (and granted) by its next `migrate`.
Every table and function a transfer revision grants to `app_role` is named here, not only
t0007's: the ledger's tables (t0001) and money functions (t0001, t0005's held ones, t0014's
and t0021's payout claim, t0023's hold lookup), the rollup's tables (t0027), and the columns of
wallet's tables transfer reads (t0007, t0021: `wallets`; t0022: `wallet_freezes`).
`transfer_caps` is executable by no role since t0007 (the money functions call it as the
owner), the trigger functions by none at all. `tests/integration/test_chain_roles_reconcile.py`
compares the lists with what a database migrated with chain roles from the start grants.
"""

from __future__ import annotations

from vaultpay_common.chain_isolation import ChainIsolation, ColumnGrant

__all__ = ["TRANSFER_ISOLATION"]

TRANSFER_ISOLATION = ChainIsolation(
    service="transfer",
    tables=(
        "ledger_transactions",
        "ledger_postings",
        "wallet_transactions",
        "top_up_payments",
        "payouts",
        "limit_usage",
        "transfer_stats_hourly",
        "transfer_stats_rollup",
    ),
    functions=(
        "transfer_send_money",
        "transfer_send_money_held",
        "transfer_top_up",
        "transfer_withdraw",
        "transfer_withdraw_held",
        "transfer_lease_payouts",
        "transfer_claim_payout_for_bank",
        "transfer_settle_payout",
        "transfer_return_payout",
        "transfer_hold_lookup",
    ),
    column_grants=(
        ColumnGrant("SELECT", "wallets", ("id", "user_id", "status", "currency", "balance")),
        ColumnGrant("SELECT", "wallet_freezes", ("wallet_id", "source", "until")),
    ),
)
