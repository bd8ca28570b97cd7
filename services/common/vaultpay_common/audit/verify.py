"""Verifying one database's audit log: the sealed chain, its anchor, and what is not sealed yet.

    result = await verify_audit(engine, settings.audit_key, checkpoints)
    print(result.report())
    sys.exit(0 if result.ok else 1)

The checkpoint is read before the database, so every seal it names was committed before the
chain is read (the sealer writes a checkpoint only after its round committed). The chain is
read in one REPEATABLE READ snapshot and streamed, so its size does not matter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.audit.checkpoints import CheckpointInvalidError, CheckpointStore
from vaultpay_common.audit.model import (
    AuditVerification,
    ChainBreak,
    ChainVerifier,
    Checkpoint,
    Seal,
    check_against_checkpoint,
)
from vaultpay_common.audit.store import EVENTS, ROW_COLUMNS, SEALS, row_from_mapping
from vaultpay_common.db import limit_statements

__all__ = ["PROGRESS_EVERY", "verify_audit"]

# How often (in seals) `verify_audit` reports its progress: a chain of millions of rows takes
# minutes, one HMAC each.
PROGRESS_EVERY = 100_000


async def verify_audit(
    conn_or_engine: AsyncConnection | AsyncEngine,
    chain_key: bytes,
    checkpoints: CheckpointStore | None,
    *,
    within_seconds: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> AuditVerification:
    """Checks every seal in position order, then the chain against the latest checkpoint.

    Broken (`ok` False): a seal that does not link or match its row, a sealed row missing, a
    checkpoint with a bad signature, or a chain that no longer reaches the checkpoint (rows
    deleted after position N, or rewritten). Warnings: no checkpoint store or no checkpoint.

    Given an engine, `within_seconds` bounds each statement of the snapshot (the session's
    own `statement_timeout` otherwise: 10 s by default, which the count of unsealed rows, a
    scan of the whole table, outgrows); a statement past it is DBAPIError 57014
    (`db.query_canceled`). `progress` hears the seals verified so far, every
    PROGRESS_EVERY of them.
    """
    checkpoint: Checkpoint | None = None
    forged: str = ""
    if checkpoints is not None:
        try:
            checkpoint = await checkpoints.latest()
        except CheckpointInvalidError as exc:
            forged = str(exc)
    if isinstance(conn_or_engine, AsyncEngine):
        async with conn_or_engine.connect() as conn:
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                if within_seconds is not None:
                    await limit_statements(conn, within_seconds)
                return await _verify(conn, chain_key, checkpoints, checkpoint, forged, progress)
    return await _verify(conn_or_engine, chain_key, checkpoints, checkpoint, forged, progress)


async def _verify(
    conn: AsyncConnection,
    chain_key: bytes,
    checkpoints: CheckpointStore | None,
    checkpoint: Checkpoint | None,
    forged: str,
    progress: Callable[[int], None] | None = None,
) -> AuditVerification:
    chain = ChainVerifier(chain_key, anchor=None if checkpoint is None else checkpoint.position)
    stmt = (
        select(SEALS, *ROW_COLUMNS[1:], EVENTS.c.sequence.label("row_sequence"))
        .select_from(SEALS.outerjoin(EVENTS, EVENTS.c.sequence == SEALS.c.sequence))
        .order_by(SEALS.c.position)
    )
    result = await conn.stream(stmt)
    async for row in result:
        m = row._mapping
        seal = Seal(m["position"], m["sequence"], m["prev_hash"], m["row_hash"])
        if m["row_sequence"] is None:
            chain.feed(seal, None)
        else:
            chain.feed(seal, row_from_mapping({**m, "sequence": m["row_sequence"]}))
        if progress is not None and chain.seen % PROGRESS_EVERY == 0:
            progress(chain.seen)

    unsealed, oldest, now = (
        await conn.execute(
            select(func.count(), func.min(EVENTS.c.created_at), func.clock_timestamp()).where(
                ~select(SEALS.c.sequence).where(SEALS.c.sequence == EVENTS.c.sequence).exists()
            )
        )
    ).one()
    age: timedelta | None = None if oldest is None else max(now - oldest, timedelta())

    warnings: list[str] = []
    broken: ChainBreak | None = chain.broken
    if forged:
        broken = ChainBreak(0, f"the checkpoint is not authentic: {forged}")
    elif checkpoint is not None:
        broken = check_against_checkpoint(chain, checkpoint)
        if broken is None and chain.verified > checkpoint.position:
            warnings.append(
                f"{chain.verified - checkpoint.position} seals after the latest checkpoint "
                "are not anchored yet"
            )
    elif chain.seen:
        where = "no checkpoint store is configured" if checkpoints is None else "no checkpoint"
        warnings.append(
            f"{where}: the head of the chain is not anchored, deleting the newest rows "
            "would go unnoticed"
        )
    return AuditVerification(
        sealed=chain.seen,
        verified=chain.verified,
        broken=broken,
        unsealed=int(unsealed),
        oldest_unsealed_age=age,
        checkpoint=checkpoint,
        warnings=tuple(warnings),
    )
