"""The revocation feed's table: read in one consistent snapshot, purged when nobody needs it.

The rows are written by a trigger on `sessions` (sql/revocations.sql), in the transaction that
revokes the session; this module only reads and purges them. Why the cursor is a transaction
horizon is explained in `vaultpay_auth.domain.revocations`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from importlib.resources import files

from sqlalchemy import (
    ColumnElement,
    Text,
    cast,
    delete,
    func,
    literal,
    select,
    true,
    tuple_,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_auth.adapters.tables import session_revocations
from vaultpay_auth.domain.revocations import FeedCursor, FeedRead, FeedRow, RevokedSession
from vaultpay_common.audit.tables import XID8, split_sql
from vaultpay_common.db import DatabaseUnavailableError

__all__ = [
    "SqlRevocationFeed",
    "revocation_feed_ddl",
    "revocation_feed_drop_ddl",
]

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DROP = [
    "DROP TRIGGER IF EXISTS sessions_feed_revocation ON sessions",
    "DROP FUNCTION IF EXISTS sessions_feed_revocation()",
    "DROP TABLE IF EXISTS session_revocations",
]


_T = session_revocations


def revocation_feed_ddl(app_role: str) -> list[str]:
    """Statements creating the feed table, its trigger on `sessions`, and `app_role`'s grants."""
    if not _ROLE.match(app_role):
        raise ValueError(f"unsafe role name {app_role!r}")
    script = files("vaultpay_auth.adapters").joinpath("sql", "revocations.sql")
    return split_sql(script.read_text(encoding="utf-8").replace("__APP_ROLE__", f'"{app_role}"'))


def revocation_feed_drop_ddl() -> list[str]:
    return list(_DROP)


def _xid8(value: int) -> ColumnElement[int]:
    return cast(literal(str(value), Text), XID8)


class SqlRevocationFeed:
    """Implements RevocationFeedReader on auth's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(self, cursor: FeedCursor, *, limit: int, look_back: timedelta) -> FeedRead:
        """Up to `limit` rows after `cursor` recorded within `look_back`, with the horizon of
        the same snapshot (one statement: in READ COMMITTED a statement sees one snapshot)."""
        t = _T
        rows = select(
            cast(t.c.xact_id, Text).label("xact_id"),
            t.c.sequence,
            t.c.session_id,
            t.c.user_id,
            t.c.revoked_at,
            t.c.reason,
        ).where(t.c.recorded_at > func.clock_timestamp() - literal(look_back))
        if cursor.after is None:
            rows = rows.where(t.c.xact_id >= _xid8(cursor.horizon))
        else:
            xact, sequence = cursor.after
            rows = rows.where(tuple_(t.c.xact_id, t.c.sequence) > tuple_(_xid8(xact), sequence))
        page = rows.order_by(t.c.xact_id, t.c.sequence).limit(limit).subquery()
        snapshot = func.pg_current_snapshot()
        anchor = select(literal(1).label("one")).subquery()
        stmt = select(
            cast(func.pg_snapshot_xmin(snapshot), Text).label("horizon"),
            cast(func.pg_snapshot_xmax(snapshot), Text).label("newest"),
            page,
        ).select_from(anchor.outerjoin(page, true()))
        try:
            async with self._engine.connect() as conn:
                found = (await conn.execute(stmt)).all()
        except (OperationalError, InterfaceError, OSError) as exc:
            raise DatabaseUnavailableError() from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailableError() from exc
            raise
        first = found[0]
        return FeedRead(
            horizon=int(first.horizon),
            newest=int(first.newest),
            rows=[
                FeedRow(
                    int(row.xact_id),
                    int(row.sequence),
                    RevokedSession(
                        str(row.session_id), str(row.user_id), row.revoked_at, row.reason
                    ),
                )
                for row in found
                if row.sequence is not None
            ],
        )

    async def purge(self, older_than: timedelta) -> int:
        """Deletes rows no poller can need any more; returns how many."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(_T).where(_T.c.recorded_at < func.clock_timestamp() - literal(older_than))
            )
        return int(result.rowcount)
