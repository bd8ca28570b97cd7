"""What the audit trail records of staff reading users' transactions (AdminListTransactions),
as wallet's staff reads of wallets and kyc's of submissions: who looked, at which
transactions, from which client address, under which filters (only the ones set), and
whether the page continued an earlier one.

Never an amount, a balance, a note or a counterparty: the row says which transactions were
seen, not what they showed, so a copy of the log reveals no more than the ids it names.

    viewer = StaffViewer("staff-id", Role.MODERATOR, "192.0.2.1")
    entry = transactions_listed(viewer, page, {"wallet_id": "VPY-AB12CD"}, continued=False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vaultpay_common.audit.model import AuditEntry, StaffViewer, staff_listing
from vaultpay_transfer.domain.model import Transaction

__all__ = ["TRANSACTIONS_LISTED", "StaffViewer", "transactions_listed"]

TRANSACTIONS_LISTED = "transactions.listed"


def transactions_listed(
    viewer: StaffViewer,
    shown: Sequence[Transaction],
    filters: Mapping[str, str],
    *,
    continued: bool,
) -> AuditEntry:
    """One page of AdminListTransactions: which transactions (each names its owner and
    wallet, so the ids say whose money was seen), under which filters, continued or not."""
    return staff_listing(
        viewer,
        TRANSACTIONS_LISTED,
        "transactions",
        filters,
        "transaction_ids",
        [t.transaction_id for t in shown],
        continued=continued,
    )
