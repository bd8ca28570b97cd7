"""`verify-ledger` on a replica (own module: its own audit chain). A replica that has not replayed
the seals the primary's newest checkpoint names reads like a chain whose newest rows were
deleted; it must be waited for, and past the wait be "could not finish" (exit 3), never BROKEN
(exit 1), while the same state on a primary stays BROKEN.

No streaming replica here: the database plays the replica behind, with a signed checkpoint of a
seal it does not hold yet (the hash the sealer will give the row waiting to be sealed), and
`standby_seal_head` faked to say the server is in recovery. The replica "replays" the seal when
the real sealer seals that row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

import vaultpay_common.audit.verify as verify_module
from tests.integration.transfer.conftest import LedgerWorld
from tests.support import eventually
from vaultpay_common.audit import AuditEntry, AuditLog, AuditSealer, FileCheckpointStore
from vaultpay_common.audit.model import Seal, seal_rows
from vaultpay_common.audit.store import EVENTS, ROW_COLUMNS, SEALS, row_from_mapping
from vaultpay_common.audit.verify import ReplicaBehindError, verify_audit
from vaultpay_common.context import DEADLINE
from vaultpay_transfer.adapters.verify_sql import AUDIT_CHECK, SqlLedgerAuditor
from vaultpay_transfer.domain.model import LedgerCheck
from vaultpay_transfer.entrypoints.cli import cli
from vaultpay_transfer.settings import TransferSettings


def _settings(env: dict[str, str]) -> TransferSettings:
    fields: dict[str, Any] = {
        k.removeprefix("TRANSFER_").lower(): v
        for k, v in env.items()
        if k != "TRANSFER_DATABASE_CHAIN_ROLES"
    }
    return TransferSettings(**fields)


async def _append(ledger: LedgerWorld, n: int) -> int:
    async with ledger.engine.begin() as conn:
        entry = AuditEntry("transaction.reversed", "transaction", f"t-{n}", {}, "staff-1")
        return await AuditLog().append(conn, entry)


async def _next_seal(ledger: LedgerWorld, key: bytes, sequence: int) -> Seal:
    """The seal the sealer will give the unsealed row `sequence`: what the primary sealed."""
    async with ledger.engine.connect() as conn:
        head = (await conn.execute(select(SEALS).order_by(SEALS.c.position.desc()))).first()
        row = (await conn.execute(select(*ROW_COLUMNS).where(EVENTS.c.sequence == sequence))).one()
    last = (
        None if head is None else Seal(head.position, head.sequence, head.prev_hash, head.row_hash)
    )
    [seal] = seal_rows(key, last, [row_from_mapping(row._mapping)])
    return seal


async def test_a_replica_behind_the_checkpoint_is_waited_for_and_never_read_as_tampering(
    ledger: LedgerWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**ledger.env, "TRANSFER_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    settings = _settings(env)
    assert settings.audit_checkpoint_dir is not None
    store = FileCheckpointStore(settings.audit_checkpoint_dir, settings.audit_checkpoint_key)
    for n in range(2):
        await _append(ledger, n)
    assert await AuditSealer(ledger.engine, settings.audit_key, store).seal_once() == 2
    # The primary sealed a third row and saved its checkpoint; this "replica" holds the row
    # but not yet its seal.
    seal = await _next_seal(ledger, settings.audit_key, await _append(ledger, 2))
    assert seal.position == 3
    assert await store.save(seal.position, seal.row_hash, datetime.now(UTC))
    auditor = SqlLedgerAuditor(ledger.engine, settings.audit_key, store)

    # On a primary that state is rows deleted: BROKEN, as before.
    checks = {c.name: c for c in await auditor.check()}
    assert not checks[AUDIT_CHECK].ok
    assert "BROKEN" in checks[AUDIT_CHECK].detail
    assert "rows deleted after position 2" in checks[AUDIT_CHECK].detail

    reads: list[int] = []

    async def standby(conn: AsyncConnection) -> int | None:
        """In recovery, holding the seals the database holds."""
        reads.append(
            int(await conn.scalar(text("SELECT coalesce(max(position), 0) FROM audit_seals")) or 0)
        )
        return reads[-1]

    monkeypatch.setattr(verify_module, "standby_seal_head", standby)

    # A replica that does not catch up within its bound (half of what the checks have left):
    # no verdict, ReplicaBehindError, after polling.
    async def within(seconds: float) -> Sequence[LedgerCheck]:
        DEADLINE.set(time.monotonic() + seconds)  # this task's context only
        return await auditor.check()

    started = time.monotonic()
    with pytest.raises(ReplicaBehindError) as behind:
        await asyncio.create_task(within(4.0))
    assert time.monotonic() - started < 4.0
    assert len(reads) >= 3 and set(reads) == {2}
    said = behind.value.message
    assert "replayed the audit chain to position 2, short of position 3" in said
    assert "run it again" in said and "deleted after" not in said

    # Given a snapshot already taken (a connection), nothing can be waited for: at once.
    async with ledger.engine.connect() as conn:
        with pytest.raises(ReplicaBehindError):
            await verify_audit(conn, settings.audit_key, store)

    # The CLI there: exit 3 ("run it again"), the ledger's checks passed and the audit chain's
    # not run, nothing BROKEN (its wait shortened to a second, the CLI's bound being minutes).
    real_wait = verify_module.wait_for_replay

    async def shortened(head: Any, position: int, seconds: float, **options: Any) -> int | None:
        return await real_wait(head, position, min(seconds, 1.0), **options)

    monkeypatch.setattr(verify_module, "wait_for_replay", shortened)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["verify-ledger"]) == 3
    out, err = capsys.readouterr()
    assert f"skip {AUDIT_CHECK}: not run" in out, out
    assert "\nFAIL " not in out and "BROKEN" not in out, out
    assert "ok   postings_balanced" in out
    [line] = err.splitlines()
    assert line.startswith("error: the replica has replayed the audit chain to position 2,")
    assert line.endswith("run it again, or on the primary; nothing was changed")

    # A replica that catches up while waited for: the chain is read once it has, intact.
    monkeypatch.setattr(verify_module, "wait_for_replay", real_wait)
    reads.clear()
    checking = asyncio.create_task(auditor.check())

    async def polling() -> bool:
        return len(reads) >= 2

    await eventually(polling, within=30, what="the verifier waits for the replica")
    assert not checking.done()
    assert await AuditSealer(ledger.engine, settings.audit_key, None).seal_once() == 1  # replayed
    checks = {c.name: c for c in await asyncio.wait_for(checking, 60)}
    assert checks[AUDIT_CHECK].ok, checks[AUDIT_CHECK].detail
    assert checks[AUDIT_CHECK].detail.startswith("3 audit rows sealed, 3 verified")
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
