"""Each service's own database role, made true at every `migrate` with chain roles.

The revisions that give a service's chain a role of its own run once: wallet w0005, transfer
t0007 and kyc k0002 move the chain's grants from the platform's group role (`shared_role`) to
the service's, and the service's row-level policies on the shared outbox and idempotency
records are created `TO` the chain's role (w0006/w0007, t0008/t0009, k0003/k0004). A database
migrated to the heads with one role for everything, then migrated with
`<SERVICE>_DATABASE_CHAIN_ROLES` set, ran none of them again: the group kept every grant and
the policies kept naming it, so every member role reached every service's tables, functions
and rows, and `migrate` said it had succeeded (review). The later revisions do not close it
either: they grant what they add to the chain's `app_role` of the day, the group's in such a
database (transfer t0014's payout claim, t0023's hold lookup, t0021's and t0022's columns of
wallet's tables).

So each service chain names what it grants its role at its head (`ChainIsolation`, given to
`run_env` by its env.py), and after the chain's upgrade, at every `migrate` with chain roles
(`upgrade_all`), `reconcile_chain`, in the migration's turn and one transaction:

1. moves to the chain's role whatever the group role still holds on the chain's tables (their
   columns included) and functions (every overload), with `move_privileges_ddl` as the
   revisions do;
2. grants the chain's role the columns of other chains' tables it reads (`column_grants`:
   transfer's five columns of `wallets`, three of `wallet_freezes`) where it does not hold them
   itself: in such a database the group held them, and the owning chain's step 1 moves them to
   its own role (which holds the whole table anyway), whichever service migrates first;
3. points each of the service's policies on the shared tables (`SHARED_POLICIES`) at the
   chain's role where it names another (`ALTER POLICY ... TO`), then sets row-level security
   as the policies' revisions do (`row_security`).

Each step reads the catalog first and changes only what differs, printing a line per grant set
moved or granted and per policy; a database already isolated gets no statement (and no lock).
Where a chain's role is the group's (no chain roles: one role serves every service), nothing is
done. The lists must name every table and function a chain's revisions grant to `app_role`:
`tests/integration/test_chain_roles_reconcile.py` compares them with a database migrated with
chain roles from the start.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from vaultpay_common.migrations import SQL_NAME, move_privileges_ddl
from vaultpay_common.row_security import ISOLATED_SERVICES, ServicePolicies

__all__ = ["SHARED_POLICIES", "ChainIsolation", "ColumnGrant", "reconcile_chain"]

# The shared tables' per-service policies: the outbox's (by producer) and the idempotency
# records' (by the service platform p0003 computes from the method), as vaultpay_common.outbox
# and vaultpay_common.idempotency create them.
SHARED_POLICIES = (
    ServicePolicies("outbox_events", "outbox", "producer"),
    ServicePolicies("idempotency_records", "idempotency", "service"),
)
_COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
# The order privileges are said in.
_PRIVILEGE_ORDER = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "MAINTAIN",
    "EXECUTE",
)

# What `role` holds itself (not through a membership) on the tables, their columns and the
# functions named: one row per privilege, in the schema `move_privileges_ddl` moves in.
_HELD = text(
    """
SELECT 'table' AS kind, c.relname::text AS name, c.relname::text AS label,
       NULL::text AS column_name, a.privilege_type AS privilege
FROM pg_class AS c, aclexplode(c.relacl) AS a
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY (CAST(:tables AS text[]))
  AND a.grantee = CAST(CAST(:role AS text) AS regrole)
UNION ALL
SELECT 'table', c.relname::text, c.relname::text, t.attname::text, a.privilege_type
FROM pg_attribute AS t JOIN pg_class AS c ON c.oid = t.attrelid, aclexplode(t.attacl) AS a
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY (CAST(:tables AS text[]))
  AND t.attnum > 0 AND NOT t.attisdropped
  AND a.grantee = CAST(CAST(:role AS text) AS regrole)
UNION ALL
SELECT 'function', p.proname::text, p.oid::regprocedure::text, NULL, a.privilege_type
FROM pg_proc AS p, aclexplode(p.proacl) AS a
WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY (CAST(:functions AS text[]))
  AND a.grantee = CAST(CAST(:role AS text) AS regrole)
ORDER BY 1, 3, 4 NULLS FIRST
"""
)
# The columns of `table` named that `role` does not hold `privilege` of itself, on the column
# or the whole table (nothing when the table is not there).
_COLUMNS_LACKING = text(
    """
SELECT t.attname::text AS name
FROM pg_attribute AS t JOIN pg_class AS c ON c.oid = t.attrelid
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = CAST(:table AS text)
  AND t.attname = ANY (CAST(:columns AS text[])) AND t.attnum > 0 AND NOT t.attisdropped
  AND NOT EXISTS (SELECT 1 FROM aclexplode(t.attacl) AS a
                  WHERE a.grantee = CAST(CAST(:role AS text) AS regrole)
                    AND a.privilege_type = CAST(:privilege AS text))
  AND NOT EXISTS (SELECT 1 FROM aclexplode(c.relacl) AS a
                  WHERE a.grantee = CAST(CAST(:role AS text) AS regrole)
                    AND a.privilege_type = CAST(:privilege AS text))
ORDER BY t.attnum
"""
)
# The columns of `table` named that `role` holds `privilege` of itself, column by column.
_COLUMNS_HELD = text(
    """
SELECT t.attname::text AS name
FROM pg_attribute AS t JOIN pg_class AS c ON c.oid = t.attrelid, aclexplode(t.attacl) AS a
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = CAST(:table AS text)
  AND t.attname = ANY (CAST(:columns AS text[])) AND t.attnum > 0 AND NOT t.attisdropped
  AND a.grantee = CAST(CAST(:role AS text) AS regrole)
  AND a.privilege_type = CAST(:privilege AS text)
ORDER BY t.attnum
"""
)
# The roles a policy applies to (none when it is not there), where row_security creates it.
_POLICY_ROLES = text(
    "SELECT CAST(roles AS text[]) AS roles FROM pg_policies"
    " WHERE schemaname = current_schema() AND tablename = CAST(:table AS text)"
    " AND policyname = CAST(:policy AS text)"
)


@dataclass(frozen=True, slots=True)
class ColumnGrant:
    """`privilege` on `columns` of `table`, another chain's table, for a chain's role."""

    privilege: str
    table: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChainIsolation:
    """What a service's chain grants its service's role at its head: every privilege on
    `tables` (and their columns) and `functions` (every overload) that the group role holds
    is the service's role's, and `column_grants` too; the service's policies on the shared
    tables name its role."""

    service: str
    tables: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    column_grants: tuple[ColumnGrant, ...] = ()
    # Columns of this chain's tables that another chain's role reads (its `column_grants`):
    # the group keeps what it holds of them, for that role to read through it until its own
    # chain's reconcile grants them to it and takes the group's (whichever migrates first; for
    # good where that chain's role is the group).
    read_by_others: tuple[ColumnGrant, ...] = ()
    # Tables of this chain whose UPDATE a revision narrowed to columns (wallet w0008, kyc
    # k0006, k0007): the chain's role holds UPDATE of these columns only, never of the table.
    # A database migrated with one role before such a revision and given chain roles after it
    # had the group's table-level UPDATE moved to the chain's role; the reconcile narrows it.
    update_columns: tuple[ColumnGrant, ...] = ()

    def __post_init__(self) -> None:
        if self.service not in ISOLATED_SERVICES:
            raise ValueError(f"{self.service!r} is not a service of the shared database")
        names = [*self.tables, *self.functions]
        for grant in self.update_columns:
            if grant.privilege != "UPDATE" or grant.table not in self.tables:
                raise ValueError(f"update_columns names UPDATE of this chain's tables: {grant}")
        for grant in (*self.column_grants, *self.read_by_others, *self.update_columns):
            if grant.privilege not in _COLUMN_PRIVILEGES:
                raise ValueError(f"not a column privilege: {grant.privilege!r}")
            if not grant.columns:
                raise ValueError(f"no column of {grant.table!r} named")
            names += [grant.table, *grant.columns]
        for name in names:
            if not SQL_NAME.match(name):
                raise ValueError(f"not a plain name: {name!r}")


def _say(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def reconcile_chain(
    connection: Connection,
    isolation: ChainIsolation,
    *,
    app_role: str,
    shared_role: str,
    say: Callable[[str], None] = _say,
) -> int:
    """Makes `app_role` (the chain's role) hold what `isolation` names, and the group role
    (`shared_role`) none of it; says each change, and returns how many it made. Nothing when
    the two roles are one. The caller commits (`run_env`, in the migration's turn)."""
    for role in (app_role, shared_role):
        if not SQL_NAME.match(role):
            raise ValueError(f"not a plain name: {role!r}")
    if app_role == shared_role:
        return 0
    return (
        _move_from_group(connection, isolation, app_role, shared_role, say)
        + _narrow_updates(connection, isolation, app_role, say)
        + _grant_columns(connection, isolation, app_role, shared_role, say)
        + _retarget_policies(connection, isolation, app_role, shared_role, say)
    )


# Whether `role` holds `privilege` on the whole of `table` (not only on some columns).
_TABLE_PRIVILEGE_HELD = text(
    """
SELECT EXISTS (
    SELECT 1 FROM pg_class AS c, aclexplode(c.relacl) AS a
    WHERE c.relnamespace = 'public'::regnamespace AND c.relname = CAST(:table AS text)
      AND a.grantee = CAST(CAST(:role AS text) AS regrole)
      AND a.privilege_type = CAST(:privilege AS text))
"""
)


def _narrow_updates(
    connection: Connection,
    isolation: ChainIsolation,
    app_role: str,
    say: Callable[[str], None],
) -> int:
    """The chain's role's table-level UPDATE of a narrowed table (`update_columns`) becomes
    UPDATE of its columns (revoking the table's takes the columns' grants with it: they are
    given again)."""
    changed = 0
    for grant in isolation.update_columns:
        held = connection.scalar(
            _TABLE_PRIVILEGE_HELD,
            {"table": grant.table, "role": app_role, "privilege": grant.privilege},
        )
        if not held:
            continue
        connection.execute(text(f'REVOKE UPDATE ON TABLE {grant.table} FROM "{app_role}"'))
        say(f"{isolation.service}: revoked UPDATE of the whole of {grant.table} from {app_role}")
        columns = list(grant.columns)
        _alter_columns(connection, isolation, "GRANT", "TO", grant, columns, app_role, say)
        changed += 1
    return changed


def _move_from_group(
    connection: Connection,
    isolation: ChainIsolation,
    app_role: str,
    shared_role: str,
    say: Callable[[str], None],
) -> int:
    rows = connection.execute(
        _HELD,
        {
            "tables": list(isolation.tables),
            "functions": list(isolation.functions),
            "role": shared_role,
        },
    ).all()
    kept = {
        (grant.table, grant.privilege, column)
        for grant in isolation.read_by_others
        for column in grant.columns
    }
    held_for_others = [
        row
        for row in rows
        if row.column_name is not None and (row.name, row.privilege, row.column_name) in kept
    ]
    rows = [row for row in rows if row not in held_for_others]
    if not rows:
        return 0
    # A line per grant set: an object's own privileges, or one privilege of its columns.
    sets: dict[tuple[str, str | None], list[str]] = {}
    for row in rows:
        if row.column_name is None:
            sets.setdefault((row.label, None), []).append(row.privilege)
        else:
            sets.setdefault((row.label, row.privilege), []).append(row.column_name)
    tables = sorted({row.name for row in rows if row.kind == "table"})
    functions = sorted({row.name for row in rows if row.kind == "function"})
    for statement in move_privileges_ddl(
        tables=tables, functions=functions, from_role=shared_role, to_role=app_role
    ):
        connection.execute(text(statement))
    for row in held_for_others:  # the move revoked all of the group's: these it keeps
        connection.execute(
            text(
                f'GRANT {row.privilege} ("{row.column_name}") ON TABLE {row.name}'
                f' TO "{shared_role}"'
            )
        )
    for (label, privilege), held in sets.items():
        what = (
            ", ".join(sorted(held, key=_PRIVILEGE_ORDER.index))
            if privilege is None
            else f"{privilege} ({', '.join(sorted(held))})"
        )
        say(f"{isolation.service}: moved {what} on {label} from {shared_role} to {app_role}")
    return len(sets)


def _grant_columns(
    connection: Connection,
    isolation: ChainIsolation,
    app_role: str,
    shared_role: str,
    say: Callable[[str], None],
) -> int:
    """The chain's role gets the other chains' columns it reads; then the group's copy of
    them (kept by the owning chain's reconcile for this role, `read_by_others`) goes."""
    changed = 0
    for grant in isolation.column_grants:
        if lacking := _columns(connection, _COLUMNS_LACKING, grant, app_role):
            _alter_columns(connection, isolation, "GRANT", "TO", grant, lacking, app_role, say)
            changed += 1
        if held := _columns(connection, _COLUMNS_HELD, grant, shared_role):
            _alter_columns(connection, isolation, "REVOKE", "FROM", grant, held, shared_role, say)
            changed += 1
    return changed


def _columns(connection: Connection, query: Any, grant: ColumnGrant, role: str) -> list[str]:
    """The columns of `grant` that `query` (`_COLUMNS_LACKING`, `_COLUMNS_HELD`) finds for
    `role`."""
    found = connection.scalars(
        query,
        {
            "table": grant.table,
            "columns": list(grant.columns),
            "role": role,
            "privilege": grant.privilege,
        },
    ).all()
    return list(found)


def _alter_columns(
    connection: Connection,
    isolation: ChainIsolation,
    verb: str,
    preposition: str,
    grant: ColumnGrant,
    columns: list[str],
    role: str,
    say: Callable[[str], None],
) -> None:
    """GRANT or REVOKE `grant`'s privilege on `columns` TO or FROM `role`, and says so."""
    quoted = ", ".join(f'"{column}"' for column in columns)
    connection.execute(
        text(f'{verb} {grant.privilege} ({quoted}) ON TABLE {grant.table} {preposition} "{role}"')
    )
    done = "granted" if verb == "GRANT" else "revoked"
    say(
        f"{isolation.service}: {done} {grant.privilege} ({', '.join(columns)})"
        f" on {grant.table} {preposition.lower()} {role}"
    )


def _retarget_policies(
    connection: Connection,
    isolation: ChainIsolation,
    app_role: str,
    shared_role: str,
    say: Callable[[str], None],
) -> int:
    """Points the service's policies named for the group at the service's role. One naming
    another role (two settings naming the service's role differently, a renamed role) stops
    the migration: moving it would leave that role's rows unreadable and unwritable."""
    retargeted = 0
    for policies in SHARED_POLICIES:
        policy = policies.policy(isolation.service)
        roles = connection.scalar(_POLICY_ROLES, {"table": policies.table, "policy": policy})
        if roles is None or list(roles) == [app_role]:
            continue  # not there (a chain below its policy), or already the service's role's
        if not set(roles) <= {shared_role, app_role}:
            raise RuntimeError(
                f'policy "{policy}" on {policies.table} applies to {", ".join(roles)}, not to'
                f" {app_role} (this migration's role of {isolation.service}) nor to the group"
                f" {shared_role}: do every service's DATABASE_CHAIN_ROLES name the same role"
                f" for {isolation.service}?"
            )
        for statement in policies.retarget_ddl(isolation.service, app_role):
            connection.execute(text(statement))
        say(
            f'{isolation.service}: policy "{policy}" on {policies.table} now applies to'
            f" {app_role} (was {', '.join(roles)})"
        )
        retargeted += 1
    return retargeted
