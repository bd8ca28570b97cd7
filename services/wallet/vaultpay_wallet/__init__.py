"""The wallet service: wallets, PIN, limits, IP trust, notifications and the staff console."""
