"""The wallet's SQL functions, from `sql/*.sql` (run by the wallet migrations and nowhere
else).

A migration's SQL never changes once it shipped, so each revision reads its own files:

* w0003: `pin_check.sql` (the PIN check's one-call phases, `wallet_pin_reserve` and
  `wallet_pin_settle_match`, and their grants); its downgrade `pin_check_drop.sql`.
* w0004: `movement_check.sql` (`wallet_pin_settle_movement`: a money movement's right PIN
  settled and its client address looked up in one call); its downgrade
  `movement_check_drop.sql`.
"""

from __future__ import annotations

import re
from importlib.resources import files

from vaultpay_common.audit.tables import split_sql

__all__ = [
    "movement_check_ddl",
    "movement_check_drop_ddl",
    "pin_check_ddl",
    "pin_check_drop_ddl",
]

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def _script(name: str) -> str:
    return files("vaultpay_wallet.adapters").joinpath("sql", name).read_text(encoding="utf-8")


def _granted_to(name: str, app_role: str) -> list[str]:
    if not _ROLE.match(app_role):
        raise ValueError(f"unsafe role name {app_role!r}")
    return split_sql(_script(name).replace("__APP_ROLE__", f'"{app_role}"'))


def pin_check_ddl(app_role: str) -> list[str]:
    """w0003: every statement creating the PIN check functions for `app_role`, in order."""
    return _granted_to("pin_check.sql", app_role)


def pin_check_drop_ddl() -> list[str]:
    """w0003's downgrade."""
    return split_sql(_script("pin_check_drop.sql"))


def movement_check_ddl(app_role: str) -> list[str]:
    """w0004: every statement creating `wallet_pin_settle_movement` for `app_role`."""
    return _granted_to("movement_check.sql", app_role)


def movement_check_drop_ddl() -> list[str]:
    """w0004's downgrade."""
    return split_sql(_script("movement_check_drop.sql"))
