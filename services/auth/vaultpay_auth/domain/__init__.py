"""Pure domain: users, sessions, and the rules about them. No infrastructure imports."""
