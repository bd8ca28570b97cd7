"""Every ERROR the payout worker can log is in the README's "What to watch", as its log line
begins (review of 2026-12-05: a payout stuck PENDING for ever logged lines the documented
alerts did not match: "the bank could not say whether it paid", the unexpected error, a
refused payout of a CLOSED wallet, a held payout the bank was already asked about)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ALERTS = [
    "the bank could not be asked",
    "the bank could not say whether it paid",
    "an operator should look at the bank side",
    "a payout could not be handled (unexpected error)",
    "a refused payout's wallet is CLOSED",
    "a payout the bank was already asked about is held by a staff freeze",
    "a payout's bank answer contradicts how the ledger finished it",
]


def _watch_paragraph() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("**What to watch**")
    return " ".join(readme[start : readme.index("\n\n", start)].split())


def _transfer_literals() -> str:
    """transfer's source, its adjacent string literals joined as Python joins them."""
    sources = (ROOT / "services/transfer/vaultpay_transfer").rglob("*.py")
    return re.sub(r'"\s*\n\s*"', "", "\n".join(p.read_text(encoding="utf-8") for p in sources))


@pytest.mark.parametrize("alert", ALERTS)
def test_each_payout_alert_is_logged_and_listed_to_watch(alert: str) -> None:
    assert alert in _watch_paragraph(), f"README's What to watch lacks {alert!r}"
    assert alert in _transfer_literals(), f"no log line says {alert!r}"
