"""What the audit trail records of staff reading wallets (ASVS 5.0 V16, as auth's staff reads of
users in `vaultpay_auth.domain.security_events`): who looked, at which wallets, from which
client address, under which filters.

Never a balance, a PIN's state or a staff note: the row says that a wallet was seen, not what
it showed, so a copy of the log reveals no more than the ids it already names.

    entry = wallet_viewed(StaffViewer("staff-id", Role.MODERATOR, "192.0.2.1"), wallet)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vaultpay_common.audit.model import AuditEntry, AuditRecord, StaffViewer, staff_listing
from vaultpay_wallet.domain.model import Wallet

__all__ = [
    "AUDIT_EVENTS_LISTED",
    "LIMITS_LISTED",
    "WALLETS_LISTED",
    "WALLET_VIEWED",
    "StaffViewer",
    "audit_events_listed",
    "limits_listed",
    "wallet_viewed",
    "wallets_listed",
]

WALLET_VIEWED = "wallet.viewed"
WALLETS_LISTED = "wallets.listed"
AUDIT_EVENTS_LISTED = "audit_events.listed"
LIMITS_LISTED = "limits.listed"


def wallet_viewed(viewer: StaffViewer, wallet: Wallet) -> AuditEntry:
    """AdminGetWallet: one wallet shown, with its owner's id to correlate with auth's log."""
    return AuditEntry(
        WALLET_VIEWED,
        "wallet",
        wallet.id,
        {"user_id": wallet.user_id, "ip": viewer.client_ip},
        actor_id=viewer.actor_id,
        actor_role=viewer.actor_role.name,
    )


def wallets_listed(
    viewer: StaffViewer, shown: Sequence[Wallet], filters: Mapping[str, str]
) -> AuditEntry:
    """AdminListWallets: one page shown, which wallets, under which filters (none: empty)."""
    return _listed(WALLETS_LISTED, "wallets", viewer, filters, "wallet_ids", [w.id for w in shown])


def audit_events_listed(
    viewer: StaffViewer, shown: Sequence[AuditRecord], filters: Mapping[str, str]
) -> AuditEntry:
    """ListAuditEvents: a page of the log shown (its rows name users, wallets and staff
    addresses), under which filters, how many rows and which (their sequences)."""
    sequences = [str(r.sequence) for r in shown]
    return _listed(AUDIT_EVENTS_LISTED, "audit_events", viewer, filters, "sequences", sequences)


def limits_listed(
    viewer: StaffViewer, wallet_ids: Sequence[str], filters: Mapping[str, str]
) -> AuditEntry:
    """AdminListLimits: a page of overrides shown (each names its wallet and who set it, and
    a user's own lower limits say what they guard), under which filters, for which wallets."""
    return _listed(LIMITS_LISTED, "limit_overrides", viewer, filters, "wallet_ids", wallet_ids)


def _listed(
    action: str,
    target_type: str,
    viewer: StaffViewer,
    filters: Mapping[str, str],
    shown_as: str,
    shown: Sequence[str],
) -> AuditEntry:
    """A page of a staff listing: the filters set, how many rows, which (`shown_as`), and
    the reader's address."""
    return staff_listing(viewer, action, target_type, filters, shown_as, shown)
