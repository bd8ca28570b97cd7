"""The statement and the batches of wallet's purges: every row of a table whose timestamp
`column` is before a cut, oldest first, at most `batch_size` a statement, each batch in a
transaction of its own (`delete_in_batches`: no long transaction or many row locks next to the
money path and the inbox's writes).

The statement's shape keeps every batch on the column's index, in the generic plan of the
prepared statement too (what asyncpg runs after its fifth execution; the plan tests in
tests/integration/wallet/ check both plans):

- the subquery reads the index in order: ORDER BY makes it the cheaper plan in a generic plan
  too, where `column < $1` is guessed to match a third of the table;
- the batch's rows are picked by `ctid` and deleted by the same statement, whose snapshot keeps
  the ctids from being reused;
- the outer test, `(column < :older_than) IS TRUE`, is checked again on each row (a row a
  concurrent write moved past the cut meanwhile is kept) and is written so that no index can
  serve it: the rows are taken by ctid (a Tid Scan), never by a second walk of the range.

`table` and `column` are written into the SQL, so they are constants of the purging module,
never input; a name that is not plain is refused.

    NOTIFICATIONS = OldRowsPurge("notifications", "created_at")
    deleted = await NOTIFICATIONS.purge(engine, older_than=cut, batch_size=1_000)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import DateTime, Integer, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.db import delete_in_batches

__all__ = ["OldRowsPurge"]

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def _batch_delete(table: str, column: str) -> TextClause:
    # Plain names only, checked by OldRowsPurge.
    return text(
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608
        f"SELECT ctid FROM {table} WHERE {column} < :older_than"
        f" ORDER BY {column} LIMIT :batch_size))"
        f" AND ({column} < :older_than) IS TRUE"
    ).bindparams(
        bindparam("older_than", type_=DateTime(timezone=True)),
        bindparam("batch_size", type_=Integer),
    )


@dataclass(frozen=True, slots=True)
class OldRowsPurge:
    """The rows of `table` whose `column` (an indexed timestamp) is before a cut."""

    table: str
    column: str
    _statement: TextClause = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (self.table, self.column):
            if not _NAME.match(name):
                raise ValueError(f"not a plain name: {name!r}")
        object.__setattr__(self, "_statement", _batch_delete(self.table, self.column))

    def statement(self, older_than: datetime, batch_size: int) -> TextClause:
        """The statement deleting at most `batch_size` rows whose `column` is before
        `older_than`, oldest first."""
        if older_than.tzinfo is None:
            raise ValueError("older_than must be an aware datetime")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return self._statement.bindparams(older_than=older_than, batch_size=batch_size)

    async def delete_batch(
        self, conn: AsyncConnection, older_than: datetime, batch_size: int
    ) -> int:
        """Deletes one batch; returns how many rows went."""
        result = await conn.execute(self.statement(older_than, batch_size))
        return int(result.rowcount)

    async def purge(self, engine: AsyncEngine, *, older_than: datetime, batch_size: int) -> int:
        """Every row before `older_than`, in batches of `batch_size`, one transaction each;
        returns how many went."""
        return await delete_in_batches(
            engine, lambda conn: self.delete_batch(conn, older_than, batch_size), batch_size
        )
