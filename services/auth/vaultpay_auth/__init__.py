"""The auth service ("AuthShield"): users, credentials, sessions, signing keys."""
