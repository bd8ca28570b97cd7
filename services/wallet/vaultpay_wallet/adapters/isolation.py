"""What the wallet chain grants wallet's own role, for `migrate` to reconcile at every run with
chain roles (`vaultpay_common.chain_isolation`; the chain's env.py passes it to `run_env`).

w0005 moved these from the group role once. A database migrated to the head with one role for
everything, then migrated with `WALLET_DATABASE_CHAIN_ROLES` set, gets them moved by its next
`migrate`. Every table and function a wallet revision grants to `app_role` is named here: the
tables of w0001 and w0002 (w0008 and w0010 change their grants), the PIN check's functions of
w0003 and w0004. `wallet_refuse_reopen` (w0011) is the owner's, granted to no role.
`tests/integration/test_chain_roles_reconcile.py` compares the lists with what a database
migrated with chain roles from the start grants.
"""

from __future__ import annotations

from vaultpay_common.chain_isolation import ChainIsolation, ColumnGrant

__all__ = ["WALLET_ISOLATION"]

WALLET_ISOLATION = ChainIsolation(
    service="wallet",
    tables=(
        "wallets",
        "wallet_pins",
        "wallet_freezes",
        "pin_reset_tokens",
        "wallet_limit_overrides",
        "system_settings",
        "system_setting_changes",
        "trusted_ips",
        "ip_confirmations",
        "notifications",
    ),
    functions=("wallet_pin_reserve", "wallet_pin_settle_match", "wallet_pin_settle_movement"),
    # Transfer's columns (its TRANSFER_ISOLATION.column_grants), read through the group until
    # transfer's own reconcile.
    read_by_others=(
        ColumnGrant("SELECT", "wallets", ("id", "user_id", "status", "currency", "balance")),
        ColumnGrant("SELECT", "wallet_freezes", ("wallet_id", "source", "until")),
    ),
    # w0008's UPDATABLE_COLUMNS: wallet's role never UPDATEs the whole of `wallets`.
    update_columns=(
        ColumnGrant("UPDATE", "wallets", ("status", "kyc_tier", "updated_at", "closed_at")),
    ),
)
