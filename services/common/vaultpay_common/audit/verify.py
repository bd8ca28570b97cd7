"""Verifying one database's audit log: the sealed chain, its anchor, and what is not sealed yet.

    result = await verify_audit(engine, settings.audit_key, checkpoints)
    print(result.report())
    sys.exit(0 if result.ok else 1)

The checkpoint is read before the database, so every seal it names was committed before the
chain is read (the sealer writes a checkpoint only after its round committed). The chain is
read in one REPEATABLE READ snapshot and streamed, so its size does not matter.

On a replica (a standby in recovery, which the README advises for a large ledger) "committed"
is the primary's: a checkpoint the primary's sealer wrote a moment ago names seals the replica
may not have replayed yet, which read as rows deleted after the replica's newest seal, a false
tamper alarm. So on a standby the verifier first waits (polling, within half its bound) until
the replica's newest seal reaches the checkpoint's position, then takes its snapshot; a replica
still behind is ReplicaBehindError (UnavailableError: the CLI's exit 3, "run it again"), never
BROKEN. A chain that does not link, or differs from the checkpoint, is BROKEN on a replica too:
it is a copy of the primary's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import func, select, text
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
from vaultpay_common.errors import UnavailableError

__all__ = [
    "PROGRESS_EVERY",
    "REPLAY_POLL_SECONDS",
    "ReplicaBehindError",
    "standby_seal_head",
    "verify_audit",
    "wait_for_replay",
]

# How often (in seals) `verify_audit` reports its progress: a chain of millions of rows takes
# minutes, one HMAC each.
PROGRESS_EVERY = 100_000
# How often a replica's newest seal is read again while it replays the checkpoint's (the
# primary's sealer writes a checkpoint about once a second).
REPLAY_POLL_SECONDS = 0.25
# How long a replica is waited for when the caller gave no bound (`within_seconds`).
REPLAY_WAIT_SECONDS = 60.0


class ReplicaBehindError(UnavailableError):
    """Verifying on a replica that has not replayed the seals the latest checkpoint names:
    no verdict (rows missing there are not proof of deletion), run it again."""

    reason = "REPLICA_BEHIND"

    def __init__(self, checkpoint: Checkpoint, head: int, waited: float) -> None:
        super().__init__(
            f"the replica has replayed the audit chain to position {head}, short of position "
            f"{checkpoint.position} that the signed checkpoint of "
            f"{checkpoint.created_at.isoformat()} records, and did not catch up within "
            f"{waited:.0f} s: it is behind (no proof of deleted rows); run it again, or on "
            "the primary"
        )


async def standby_seal_head(conn: AsyncConnection) -> int | None:
    """The position of the newest seal this server holds when it is a standby replaying a
    primary (`pg_is_in_recovery()`), else None: on a primary a checkpoint beyond the newest
    seal means rows deleted; on a standby, seals not replayed yet. A primary reads no table."""
    if not await conn.scalar(text("SELECT pg_is_in_recovery()")):
        return None
    return int(await conn.scalar(select(func.coalesce(func.max(SEALS.c.position), 0))) or 0)


async def wait_for_replay(
    head: Callable[[], Awaitable[int | None]],
    position: int,
    seconds: float,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    poll: float = REPLAY_POLL_SECONDS,
) -> int | None:
    """Reads `head` (a standby's newest seal; None on a primary, read once) until it reaches
    `position` or `seconds` have passed, every `poll` seconds; returns the last read."""
    until = monotonic() + seconds
    while True:
        seen = await head()
        left = until - monotonic()
        if seen is None or seen >= position or left <= 0:
            return seen
        await sleep(min(poll, left))


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

    On a standby whose newest seal is short of the checkpoint, given an engine, it waits for
    the replay up to half of `within_seconds` (REPLAY_WAIT_SECONDS without it) before taking
    its snapshot; a chain that still ends short of the checkpoint there is ReplicaBehindError,
    not "rows deleted" (given a connection, there is no waiting: at once).
    """
    checkpoint: Checkpoint | None = None
    forged: str = ""
    if checkpoints is not None:
        try:
            checkpoint = await checkpoints.latest()
        except CheckpointInvalidError as exc:
            forged = str(exc)
    if isinstance(conn_or_engine, AsyncEngine):
        started = time.monotonic()
        if checkpoint is not None:
            wait = REPLAY_WAIT_SECONDS if within_seconds is None else within_seconds / 2
            await _wait_for_replica(conn_or_engine, checkpoint, wait, within_seconds)
        async with conn_or_engine.connect() as conn:
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with conn.begin():
                if within_seconds is not None:
                    left = within_seconds - (time.monotonic() - started)
                    await limit_statements(conn, left)
                return await _verify(
                    conn, chain_key, checkpoints, checkpoint, forged, progress, started
                )
    return await _verify(conn_or_engine, chain_key, checkpoints, checkpoint, forged, progress)


async def _wait_for_replica(
    engine: AsyncEngine, checkpoint: Checkpoint, wait: float, within_seconds: float | None
) -> None:
    """On a standby, until its newest seal reaches `checkpoint` (at most `wait` seconds;
    ReplicaBehindError past it); on a primary one read of `pg_is_in_recovery()`. Each read
    in a transaction of its own (a snapshot taken before the wait would never see the
    replica catch up), bounded by `within_seconds` as the snapshot's statements are."""
    started = time.monotonic()
    async with engine.connect() as conn:

        async def head() -> int | None:
            async with conn.begin():
                if within_seconds is not None:
                    await limit_statements(conn, within_seconds - (time.monotonic() - started))
                return await standby_seal_head(conn)

        seen = await wait_for_replay(head, checkpoint.position, wait)
    if seen is not None and seen < checkpoint.position:
        raise ReplicaBehindError(checkpoint, seen, time.monotonic() - started)


async def _verify(
    conn: AsyncConnection,
    chain_key: bytes,
    checkpoints: CheckpointStore | None,
    checkpoint: Checkpoint | None,
    forged: str,
    progress: Callable[[int], None] | None = None,
    started: float | None = None,
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
        if chain.broken is None and chain.verified < checkpoint.position:
            # An intact chain short of the checkpoint is rows deleted on a primary, and on a
            # standby seals not replayed yet: given a connection, nothing was waited for.
            head = await standby_seal_head(conn)
            if head is not None:
                waited = 0.0 if started is None else time.monotonic() - started
                raise ReplicaBehindError(checkpoint, head, waited)
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
