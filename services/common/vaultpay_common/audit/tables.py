"""The audit tables as SQLAlchemy Core tables, and the DDL a migration runs to create them.

    audit_events, audit_seals = audit_tables(metadata)     # in a service's tables module
    for statement in audit_ddl(app_role):                  # in a migration, as the owner
        op.execute(statement)

The DDL lives in `sql/*.sql` (read with importlib.resources, shipped as package data).
"""

from __future__ import annotations

import re
from importlib.resources import files

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import UserDefinedType

__all__ = [
    "SEAL_LOCK_KEY",
    "XID8",
    "audit_action_index_ddl",
    "audit_action_index_drop_ddl",
    "audit_ddl",
    "audit_drop_ddl",
    "audit_tables",
    "split_sql",
]

# The advisory lock sealers serialise on (bytes "VPAUDSEL"); sql/functions.sql uses the same.
SEAL_LOCK_KEY = int.from_bytes(b"VPAUDSEL", "big")
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
_SQL_FILES = ("tables.sql", "functions.sql", "protect.sql")


class _Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (read as text where it is read at all)."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "xid8"


XID8 = _Xid8()


def audit_tables(metadata: MetaData) -> tuple[Table, Table]:
    """(audit_events, audit_seals) in `metadata`; matches sql/tables.sql, then
    sql/action_index.sql (platform p0004, auth 0006)."""
    events = Table(
        "audit_events",
        metadata,
        Column("sequence", BigInteger, primary_key=True, autoincrement=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("xact_id", XID8, nullable=False),
        Column("actor_id", Text, nullable=False),
        Column("actor_role", Text, nullable=False),
        Column("action", Text, nullable=False),
        Column("target_type", Text, nullable=False),
        Column("target_id", Text, nullable=False),
        Column("request_id", Text, nullable=False),
        Column("details", JSONB, nullable=False),
        CheckConstraint("jsonb_typeof(details) = 'object'", name="audit_events_details_object"),
        Index("audit_events_xact_idx", "xact_id"),
        Index("audit_events_actor_idx", "actor_id", "sequence"),
        Index("audit_events_target_idx", "target_id", "sequence"),
        Index("audit_events_created_idx", "created_at"),
        Index("audit_events_action_idx", "action", "sequence"),
    )
    seals = Table(
        "audit_seals",
        metadata,
        Column("position", BigInteger, primary_key=True, autoincrement=False),
        Column(
            "sequence",
            BigInteger,
            ForeignKey("audit_events.sequence"),
            nullable=False,
            unique=True,
        ),
        Column("prev_hash", Text, nullable=False),
        Column("row_hash", Text, nullable=False),
        Column("sealed_at", DateTime(timezone=True), nullable=False),
    )
    return events, seals


def split_sql(script: str) -> list[str]:
    """Statements of a script: split at `;` ending a line outside $$-quoted bodies.

    Comment lines are dropped; enough for our own .sql files, not a general SQL parser.
    """
    statements: list[str] = []
    current: list[str] = []
    in_body = False
    for line in script.splitlines():
        stripped = line.strip()
        if not in_body and (not stripped or stripped.startswith("--")):
            continue
        current.append(line)
        if line.count("$$") % 2 == 1:
            in_body = not in_body
        if not in_body and stripped.endswith(";"):
            statements.append("\n".join(current).strip().removesuffix(";"))
            current = []
    if current and "\n".join(current).strip():
        raise ValueError("the SQL script ends inside a statement")
    return statements


def _script(name: str) -> str:
    return files("vaultpay_common.audit").joinpath("sql", name).read_text(encoding="utf-8")


def audit_ddl(app_role: str) -> list[str]:
    """Statements creating the audit tables, functions, triggers and grants for `app_role`."""
    if not _ROLE.match(app_role):
        raise ValueError(f"unsafe role name {app_role!r}")
    statements: list[str] = []
    for name in _SQL_FILES:
        statements += split_sql(_script(name).replace("__APP_ROLE__", f'"{app_role}"'))
    return statements


def audit_drop_ddl() -> list[str]:
    """Statements undoing `audit_ddl` (a downgrade)."""
    return split_sql(_script("drop.sql"))


def audit_action_index_ddl() -> list[str]:
    """The listing's `(action, sequence)` index, after `audit_ddl` (platform p0004, auth 0006):
    CONCURRENTLY, so each statement must run outside a transaction (an autocommit block)."""
    return split_sql(_script("action_index.sql"))


def audit_action_index_drop_ddl() -> list[str]:
    """Undoes `audit_action_index_ddl` (a downgrade), outside a transaction too."""
    return split_sql(_script("action_index_drop.sql"))
