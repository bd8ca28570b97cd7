"""VaultPay transfer service: the double-entry ledger and money movement."""
