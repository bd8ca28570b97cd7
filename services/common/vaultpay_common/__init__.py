"""Infrastructure shared by every VaultPay service. No business rules live here."""
