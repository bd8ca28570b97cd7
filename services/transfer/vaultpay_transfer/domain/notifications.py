"""The texts of the notifications the ledger's events become (title at most 120 characters,
body at most 1,000; never a full account number). Pure: the outbox handler calls it with an
event's facts.

    notification_text("MONEY_SENT", {"amount_minor": "125050", "currency": "INR", ...})
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from vaultpay_common.money import format_major

__all__ = [
    "NotificationText",
    "UnknownNotificationKindError",
    "format_amount",
    "notification_text",
]


@dataclass(frozen=True, slots=True)
class NotificationText:
    kind: str  # MONEY_SENT, MONEY_RECEIVED, TOP_UP, WITHDRAWAL
    title: str
    body: str


def format_amount(amount_minor: int | str, currency: str) -> str:
    """ "125050", "INR" -> "1,250.50 INR"; "5000", "JPY" -> "5,000 JPY" (each currency's own
    ISO 4217 minor unit: review of 2026-12-05, a yen amount read a hundred times too small).
    Also the major-unit form of a limit refusal's message (domain/errors.py)."""
    return format_major(int(amount_minor), currency)


def _balance(facts: Mapping[str, str]) -> str:
    after = facts.get("balance_after_minor")
    return f" Balance: {format_amount(after, facts['currency'])}." if after else ""


# ASCII, low double, fullwidth, double prime, CJK double primes (the others are Pi or Pf).
_OTHER_DOUBLE_QUOTES = '"\u201e\uff02\u2033\u301d\u301e\u301f'


def _is_double_quote(char: str) -> bool:
    """A mark that could read as closing our quotes: the ASCII one, any initial or final
    quotation mark (Pi, Pf: curly, low, angle quotes), the fullwidth one, a double prime."""
    return char in _OTHER_DOUBLE_QUOTES or unicodedata.category(char) in ("Pi", "Pf")


def _wallet_holder(facts: Mapping[str, str]) -> str:
    """The other wallet of a send, as `"Name" (VPY-XXXXXX)`: a display name is anyone's choice
    of words ("VaultPay Security: call …" sent with 0.01 INR would read as ours unquoted),
    so it is quoted, stripped of its own quotes, and the wallet id says who it is."""
    name = "".join("'" if _is_double_quote(c) else c for c in facts.get("counterparty", ""))
    wallet_id = facts.get("counterparty_wallet_id", "")
    return f'"{name}" ({wallet_id})' if wallet_id else f'"{name}"'


class UnknownNotificationKindError(ValueError):
    """A kind this build has no text for (a newer build's event, mid-rollout)."""


_KINDS = frozenset(
    {"MONEY_SENT", "MONEY_RECEIVED", "TOP_UP", "WITHDRAWAL_SETTLED", "WITHDRAWAL_RETURNED"}
)


def notification_text(kind: str, facts: Mapping[str, str]) -> NotificationText:
    """KeyError/ValueError for an event without the facts its kind needs;
    UnknownNotificationKindError, before any fact is read, for a kind this build has no text
    for (a newer kind may carry other facts)."""
    if kind not in _KINDS:
        raise UnknownNotificationKindError(f"unknown notification kind {kind!r}")
    amount = format_amount(facts["amount_minor"], facts["currency"])
    reference = facts["reference"]
    who = facts.get("counterparty", "")
    if kind == "MONEY_SENT":
        return NotificationText(
            kind,
            f"You sent {amount}",
            f"{amount} to {_wallet_holder(facts)}, reference {reference}.{_balance(facts)}",
        )
    if kind == "MONEY_RECEIVED":
        return NotificationText(
            kind,
            f"You received {amount}",
            f"{amount} from {_wallet_holder(facts)}, reference {reference}.{_balance(facts)}",
        )
    if kind == "TOP_UP":
        return NotificationText(
            kind,
            f"Wallet topped up: {amount}",
            f"{amount} by {who} ({reference}).{_balance(facts)}",
        )
    if kind == "WITHDRAWAL_SETTLED":
        return NotificationText(
            "WITHDRAWAL", f"Withdrawal paid: {amount}", f"{amount} paid to {who} ({reference})."
        )
    if kind == "WITHDRAWAL_RETURNED":
        reason = facts.get("reason") or "the bank refused it"
        return NotificationText(
            "WITHDRAWAL",
            f"Withdrawal returned: {amount}",
            f"{amount} to {who} ({reference}) came back to your wallet: {reason}.{_balance(facts)}",
        )
    raise AssertionError(f"no text for {kind!r}, which _KINDS names")  # pragma: no cover
