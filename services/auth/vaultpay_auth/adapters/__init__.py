"""PostgreSQL, Redis, bcrypt and key-management adapters."""
