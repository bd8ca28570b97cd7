"""What the kyc chain grants kyc's own role, for `migrate` to reconcile at every run with chain
roles (`vaultpay_common.chain_isolation`; the chain's env.py passes it to `run_env`).

k0002 moved these from the group role once. A database migrated to the head with one role for
everything, then migrated with `KYC_DATABASE_CHAIN_ROLES` set, gets them moved by its next
`migrate`. Every table a kyc revision grants to `app_role` is named here (k0001's; k0006
narrows UPDATE of `kyc_submissions` to columns, k0007 that of `kyc_keys` and
`kyc_key_rotations`); `kyc_check_submission_change` (k0006) is the
owner's, granted to no role. `tests/integration/test_chain_roles_reconcile.py` compares the
lists with what a database migrated with chain roles from the start grants.
"""

from __future__ import annotations

from vaultpay_common.chain_isolation import ChainIsolation, ColumnGrant

__all__ = ["KYC_ISOLATION"]

KYC_ISOLATION = ChainIsolation(
    service="kyc",
    tables=("kyc_submissions", "kyc_documents", "kyc_keys", "kyc_key_rotations"),
    # k0006's and k0007's UPDATABLE_COLUMNS: kyc's role never UPDATEs these tables whole.
    update_columns=(
        ColumnGrant(
            "UPDATE",
            "kyc_submissions",
            (
                "status",
                "rejection_reason",
                "granted_tier",
                "reviewer_id",
                "reviewed_at",
                "key_id",
                "wrapped_key",
            ),
        ),
        ColumnGrant("UPDATE", "kyc_keys", ("state", "retiring_since")),
        ColumnGrant("UPDATE", "kyc_key_rotations", ("reencrypted_count", "finished_at")),
    ),
)
