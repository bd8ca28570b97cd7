"""The background sealer: chains committed audit rows, in order, then anchors the head.

    sealer = AuditSealer(engine, settings.audit_key, checkpoints)
    runtime.every(settings.audit_seal_interval_seconds, sealer.seal_once, name="audit sealer")

Every replica of every service on a database may run one: a round that cannot take the sealers'
advisory lock at once is skipped (writers never take that lock). Why sealing in rounds below the
transaction horizon is sound is explained in `vaultpay_common.audit`.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Text, cast, literal, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.audit.checkpoints import CheckpointStore
from vaultpay_common.audit.model import AuditRow, Checkpoint, Seal, seal_rows
from vaultpay_common.audit.store import EVENTS, ROW_COLUMNS, SEALS, row_from_mapping
from vaultpay_common.audit.tables import SEAL_LOCK_KEY, XID8

__all__ = ["AuditChainBrokenError", "AuditSealer"]

log = logging.getLogger(__name__)

_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
_HORIZON = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
_SEAL = text("SELECT audit_seal(:sequence, :prev_hash, :row_hash)")


class AuditChainBrokenError(Exception):
    """The chain no longer reaches the latest checkpoint: sealing stops until someone looks."""


class AuditSealer:
    """Seals committed audit rows of one database, one short transaction per round."""

    def __init__(
        self,
        engine: AsyncEngine,
        chain_key: bytes,
        checkpoints: CheckpointStore | None,
        *,
        batch_size: int = 500,
    ) -> None:
        if len(chain_key) < 32:
            raise ValueError("the audit chain key must be at least 32 bytes")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self._engine = engine
        self._key = chain_key
        self._checkpoints = checkpoints
        self._batch_size = batch_size
        # Every row whose transaction id is below this is sealed (learnt from a complete round
        # of this sealer; None until then, and the first round looks at every row).
        self._sealed_below: str | None = None

    async def seal_once(self) -> int:
        """One round: seals up to `batch_size` finished rows; returns how many it sealed.

        Raises AuditChainBrokenError (and seals nothing) when the chain lost the head the
        latest checkpoint recorded, and CheckpointInvalidError when that checkpoint is forged.
        """
        checkpoint = None if self._checkpoints is None else await self._checkpoints.latest()
        async with self._engine.connect() as conn, conn.begin():
            if not await conn.scalar(_TRY_LOCK, {"key": SEAL_LOCK_KEY}):
                return 0  # another sealer is at it
            head = await _head(conn)
            if checkpoint is not None:
                await _require_checkpoint(conn, checkpoint)
            horizon = str(await conn.scalar(_HORIZON))
            if self._sealed_below is not None and int(horizon) < int(self._sealed_below):
                # Transaction ids went back (a failover to a standby that lost the tail, a
                # restore in place): rows below what this sealer remembers may be unsealed.
                log.warning(
                    "the database's transaction horizon went back; looking at every row again",
                    extra={"horizon": horizon, "remembered": self._sealed_below},
                )
                self._sealed_below = None
            rows = await self._sealable(conn, horizon)
            seals = seal_rows(self._key, head, rows)
            if seals:
                await conn.execute(
                    _SEAL,
                    [
                        {"sequence": s.sequence, "prev_hash": s.prev_hash, "row_hash": s.row_hash}
                        for s in seals
                    ],
                )
                new_head = await _head(conn)
                if new_head != seals[-1]:
                    raise RuntimeError(f"audit_seal appended {new_head}, expected {seals[-1]}")
                head = new_head
        if len(rows) < self._batch_size:
            self._sealed_below = horizon
        stale = checkpoint is None or (head is not None and head.position > checkpoint.position)
        if self._checkpoints is not None and head is not None and stale:
            await self._checkpoints.save(head.position, head.row_hash, datetime.now(UTC))
        if seals:
            log.debug("audit rows sealed", extra={"count": len(seals)})
        return len(seals)

    async def _sealable(self, conn: AsyncConnection, horizon: str) -> list[AuditRow]:
        """Unsealed rows of finished transactions (xact_id below `horizon`), oldest first."""
        c = EVENTS.c
        sealed = select(SEALS.c.sequence).where(SEALS.c.sequence == c.sequence).exists()
        stmt = (
            select(*ROW_COLUMNS)
            .where(c.xact_id < _xid8(horizon), ~sealed)
            .order_by(c.sequence)
            .limit(self._batch_size)
        )
        if self._sealed_below is not None:
            stmt = stmt.where(c.xact_id >= _xid8(self._sealed_below))
        return [row_from_mapping(row._mapping) for row in await conn.execute(stmt)]


def _xid8(value: str) -> ColumnElement[int]:
    return cast(literal(value, Text), XID8)


async def _head(conn: AsyncConnection) -> Seal | None:
    row = (
        await conn.execute(
            select(SEALS.c.position, SEALS.c.sequence, SEALS.c.prev_hash, SEALS.c.row_hash)
            .order_by(SEALS.c.position.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else Seal(row.position, row.sequence, row.prev_hash, row.row_hash)


async def _require_checkpoint(conn: AsyncConnection, checkpoint: Checkpoint) -> None:
    """The seal at the checkpoint's position must still carry the checkpointed hash."""
    row_hash = await conn.scalar(
        select(SEALS.c.row_hash).where(SEALS.c.position == checkpoint.position)
    )
    if row_hash is None or not hmac.compare_digest(str(row_hash), checkpoint.head_hash):
        raise AuditChainBrokenError(
            f"the audit chain no longer reaches checkpoint position {checkpoint.position} "
            "with the same hash (rows deleted or rewritten); not sealing: run verify-audit"
        )
