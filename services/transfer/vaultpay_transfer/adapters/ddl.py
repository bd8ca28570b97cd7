"""The ledger's schema, functions, triggers and grants, from `sql/*.sql` (run by migration
t0001 and nowhere else)."""

from __future__ import annotations

import re
from importlib.resources import files

from vaultpay_common.audit.tables import split_sql

__all__ = ["ledger_ddl", "ledger_drop_ddl"]

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FILES = ("schema.sql", "functions.sql", "protect.sql")


def _script(name: str) -> str:
    return files("vaultpay_transfer.adapters").joinpath("sql", name).read_text(encoding="utf-8")


def ledger_ddl(app_role: str) -> list[str]:
    """Every statement creating the ledger for `app_role`, in order."""
    if not _ROLE.match(app_role):
        raise ValueError(f"unsafe role name {app_role!r}")
    statements: list[str] = []
    for name in _FILES:
        statements += split_sql(_script(name).replace("__APP_ROLE__", f'"{app_role}"'))
    return statements


def ledger_drop_ddl() -> list[str]:
    return split_sql(_script("drop.sql"))
