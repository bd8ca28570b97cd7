"""The sealed audit chain on a real PostgreSQL: writers never wait, the sealer chains what
committed (in whatever order), the verifier finds tampering, deletions (thanks to the signed
checkpoint) and forged seals, and the app role cannot write around the functions."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_auth.entrypoints.cli import AUTH_CHAIN
from vaultpay_common.audit import (
    GENESIS_HASH,
    AuditChainBrokenError,
    AuditEntry,
    AuditLog,
    AuditQuery,
    AuditSealer,
    FileCheckpointStore,
    audit_ddl,
    audit_drop_ddl,
    list_audit_events,
    verify_audit,
)
from vaultpay_common.audit.tables import SEAL_LOCK_KEY
from vaultpay_common.db import create_engine, query_canceled
from vaultpay_common.migrations import migrate_chain
from vaultpay_devstack.postgres import Provisioned

pytestmark = pytest.mark.integration

CHAIN_KEY = b"c" * 32
CHECKPOINT_KEY = b"p" * 32
LOG = AuditLog()


@pytest.fixture(scope="module")
async def owner(databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(databases.vaultpay_owner_dsn, pool_size=2, application_name="au-own")
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def app(databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(databases.app_dsn("wallet"), pool_size=20, application_name="au-app")
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def fresh_tables(owner: AsyncEngine, databases: Provisioned) -> None:
    """Every test starts from an empty chain (the owner drops and recreates the tables)."""
    async with owner.begin() as conn:
        for statement in [*audit_drop_ddl(), *audit_ddl(databases.vaultpay_app_role)]:
            await conn.execute(text(statement))


@pytest.fixture
def checkpoints(tmp_path: Path) -> FileCheckpointStore:
    return FileCheckpointStore(tmp_path / "checkpoints", CHECKPOINT_KEY)


def _entry(n: int) -> AuditEntry:
    return AuditEntry("user.role_changed", "user", f"user-{n}", {"new_role": "ADMIN"}, "admin-1")


async def _append_committed(app: AsyncEngine, *numbers: int) -> list[int]:
    sequences = []
    for n in numbers:
        async with app.begin() as conn:
            sequences.append(await LOG.append(conn, _entry(n)))
    return sequences


async def _seal_until(sealer: AuditSealer, sealed: int, *, within: float = 10.0) -> int:
    """Runs rounds until `sealed` rows were sealed in all (polls with a deadline)."""
    total = 0
    deadline = time.monotonic() + within
    while total < sealed:
        total += await sealer.seal_once()
        if time.monotonic() > deadline:
            raise AssertionError(f"only {total} of {sealed} rows sealed in {within} s")
    return total


async def _as_owner_without_triggers(owner: AsyncEngine, *statements: str) -> None:
    """What someone holding the owner's password can do: switch the triggers off, then write."""
    triggers = [
        "audit_events_no_update_delete",
        "audit_seals_no_update_delete",
    ]
    async with owner.begin() as conn:
        for trigger in triggers:
            table = trigger.rsplit("_no_", 1)[0]
            await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
        for statement in statements:
            await conn.execute(text(statement))
        for trigger in triggers:
            table = trigger.rsplit("_no_", 1)[0]
            await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))


async def _in_transaction(
    app: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[Any]]
) -> tuple[AsyncConnection, Any]:
    conn = await app.connect()
    await conn.begin()
    return conn, await work(conn)


async def test_writers_do_not_wait_for_each_other(app: AsyncEngine) -> None:
    first, one = await _in_transaction(app, lambda c: LOG.append(c, _entry(1)))
    try:
        # The first transaction is still open; the second append must not wait for it.
        second, two = await asyncio.wait_for(
            _in_transaction(app, lambda c: LOG.append(c, _entry(2))), timeout=5
        )
        await second.commit()
        await second.close()
        await first.commit()
    finally:
        await first.close()
    assert two == one + 1
    result = await verify_audit(app, CHAIN_KEY, None)
    assert result.ok
    assert result.unsealed == 2


async def test_rows_committed_out_of_order_are_all_sealed_and_the_chain_verifies(
    app: AsyncEngine, checkpoints: FileCheckpointStore
) -> None:
    sealer = AuditSealer(app, CHAIN_KEY, checkpoints)
    # `late` takes its transaction id first but appends last: it gets the larger sequence and
    # commits first. `early` appends first (smaller sequence) and commits last.
    late = await app.connect()
    await late.begin()
    await late.execute(text("SELECT pg_current_xact_id()"))
    early, early_sequence = await _in_transaction(app, lambda c: LOG.append(c, _entry(1)))
    late_sequence = await LOG.append(late, _entry(2))
    await late.commit()
    await late.close()
    assert early_sequence < late_sequence

    assert await sealer.seal_once() == 1  # only the finished transaction's row
    pending = await verify_audit(app, CHAIN_KEY, checkpoints)
    assert pending.ok and pending.sealed == 1 and pending.unsealed == 0  # `early` not visible

    await early.commit()
    await early.close()
    assert await _seal_until(sealer, 1) == 1
    result = await verify_audit(app, CHAIN_KEY, checkpoints)
    assert result.ok, result.report()
    assert (result.sealed, result.verified, result.unsealed) == (2, 2, 0)
    assert result.anchored and result.checkpoint is not None
    assert result.checkpoint.position == 2
    async with app.connect() as conn:
        order = (
            await conn.execute(text("SELECT sequence FROM audit_seals ORDER BY position"))
        ).scalars()
        assert list(order) == [late_sequence, early_sequence]


async def test_a_sealer_whose_remembered_horizon_is_ahead_of_the_database_looks_again(
    app: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """After a failover to a standby that lost the tail (or a restore in place) transaction ids
    restart below what a running sealer remembers as sealed; rows committed then were never
    looked at (review of 2026-12-04). Played by a sealer that remembers a horizon far ahead."""
    sealer = AuditSealer(app, CHAIN_KEY, None)
    await sealer.seal_once()
    sealer._sealed_below = str(2**62)  # what it learnt before the database went back
    async with app.begin() as conn:
        sequence = await LOG.append(conn, _entry(1))

    async def sealed() -> bool:
        await sealer.seal_once()
        async with app.connect() as conn:
            found = await conn.scalar(
                text("SELECT count(*) FROM audit_seals WHERE sequence = :s"), {"s": sequence}
            )
        return bool(found)

    deadline = time.monotonic() + 10
    while not await sealed():
        assert time.monotonic() < deadline, "the row was never sealed"
    assert "transaction horizon went back" in caplog.text


async def test_many_concurrent_writers_and_sealers_end_in_one_verified_chain(
    app: AsyncEngine, checkpoints: FileCheckpointStore
) -> None:
    writers, per_writer = 12, 5
    sealers = [AuditSealer(app, CHAIN_KEY, checkpoints, batch_size=7) for _ in range(3)]
    done = asyncio.Event()

    async def write(n: int) -> None:
        for i in range(per_writer):
            async with app.begin() as conn:
                await LOG.append(conn, _entry(n * 100 + i))
                await asyncio.sleep(random.uniform(0, 0.02))  # commit in a shuffled order

    async def seal(sealer: AuditSealer) -> None:
        while not done.is_set():
            await sealer.seal_once()
            await asyncio.sleep(0.005)

    sealing = [asyncio.create_task(seal(s)) for s in sealers]
    await asyncio.gather(*(write(n) for n in range(writers)))
    done.set()
    await asyncio.gather(*sealing)
    total = writers * per_writer
    deadline = time.monotonic() + 10
    while (result := await verify_audit(app, CHAIN_KEY, checkpoints)).unsealed:
        await sealers[0].seal_once()
        assert time.monotonic() < deadline, result.report()
    assert result.ok, result.report()
    assert (result.sealed, result.verified) == (total, total)
    assert result.checkpoint is not None and result.checkpoint.position == total


async def test_unsealed_rows_are_reported_with_the_age_of_the_oldest(app: AsyncEngine) -> None:
    await _append_committed(app, 1, 2)
    result = await verify_audit(app, CHAIN_KEY, None)
    assert result.ok
    assert result.unsealed == 2
    assert result.oldest_unsealed_age is not None
    assert "not sealed yet: 2 rows" in result.report()


async def test_a_row_tampered_with_by_the_owner_is_found(
    app: AsyncEngine, owner: AsyncEngine, checkpoints: FileCheckpointStore
) -> None:
    sequences = await _append_committed(app, 1, 2, 3)
    await _seal_until(AuditSealer(app, CHAIN_KEY, checkpoints), 3)
    await _as_owner_without_triggers(
        owner, f"UPDATE audit_events SET target_id = 'someone-else' WHERE sequence = {sequences[1]}"
    )
    result = await verify_audit(app, CHAIN_KEY, checkpoints)
    assert not result.ok
    assert result.broken is not None
    assert (result.broken.position, result.broken.sequence) == (2, sequences[1])
    assert "BROKEN at position 2" in result.report()
    assert "does not match" in result.report()


async def test_deleting_the_newest_sealed_rows_is_found_thanks_to_the_checkpoint(
    app: AsyncEngine, owner: AsyncEngine, checkpoints: FileCheckpointStore
) -> None:
    sequences = await _append_committed(app, 1, 2, 3)
    sealer = AuditSealer(app, CHAIN_KEY, checkpoints)
    await _seal_until(sealer, 3)
    newest = ", ".join(str(s) for s in sequences[1:])
    await _as_owner_without_triggers(
        owner,
        f"DELETE FROM audit_seals WHERE sequence IN ({newest})",
        f"DELETE FROM audit_events WHERE sequence IN ({newest})",
    )
    # What is left is a valid chain of one: only the checkpoint shows it was longer.
    unanchored = await verify_audit(app, CHAIN_KEY, None)
    assert unanchored.ok and not unanchored.anchored
    assert any("not anchored" in w for w in unanchored.warnings)

    result = await verify_audit(app, CHAIN_KEY, checkpoints)
    assert not result.ok
    assert "rows deleted after position 1" in result.report()
    # And the sealer does not paper over it by chaining new rows where the deleted ones were.
    await _append_committed(app, 4)
    with pytest.raises(AuditChainBrokenError):
        await sealer.seal_once()
    still = await verify_audit(app, CHAIN_KEY, checkpoints)
    assert not still.ok and still.unsealed == 1


async def test_a_checkpoint_with_a_bad_signature_is_reported_broken(
    app: AsyncEngine, checkpoints: FileCheckpointStore
) -> None:
    await _append_committed(app, 1)
    await _seal_until(AuditSealer(app, CHAIN_KEY, checkpoints), 1)
    stored = json.loads(checkpoints.path.read_text())
    checkpoints.path.write_text(json.dumps({**stored, "position": 7}))
    result = await verify_audit(app, CHAIN_KEY, checkpoints)
    assert not result.ok
    assert "not authentic" in result.report()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO audit_events (sequence, created_at, xact_id, actor_id, actor_role, action,"
        " target_type, target_id, request_id, details) VALUES (9223372036854775807, now(),"
        " pg_current_xact_id(), 'x', '', 'forged', 'user', 'u', '', '{}')",
        "INSERT INTO audit_seals VALUES (1, 1, repeat('0', 64), repeat('f', 64), now())",
        "SELECT setval('audit_events_sequence_seq', 9223372036854775000)",
        "SELECT nextval('audit_events_sequence_seq')",
    ],
)
async def test_the_app_role_cannot_write_around_the_functions(
    app: AsyncEngine, statement: str
) -> None:
    await _append_committed(app, 1)
    with pytest.raises(ProgrammingError, match="permission denied"):
        async with app.begin() as conn:
            await conn.execute(text(statement))
    # Appending still works, with the database's own next sequence.
    assert await _append_committed(app, 2) == [2]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'forged'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_seals SET row_hash = repeat('0', 64)",
        "DELETE FROM audit_seals",
        "TRUNCATE audit_seals",
    ],
)
async def test_update_delete_and_truncate_are_refused_even_to_the_owner(
    app: AsyncEngine, owner: AsyncEngine, statement: str
) -> None:
    await _append_committed(app, 1)
    await _seal_until(AuditSealer(app, CHAIN_KEY, None), 1)
    with pytest.raises(ProgrammingError, match="permission denied"):
        async with app.begin() as conn:
            await conn.execute(text(statement))
    # (TRUNCATE audit_events meets the seals' foreign key even before the trigger.)
    with pytest.raises(DBAPIError, match=r"append-only|referenced in a foreign key"):
        async with owner.begin() as conn:
            await conn.execute(text(statement))


async def test_a_forged_seal_blocks_nothing_and_fails_verification(app: AsyncEngine) -> None:
    (first,) = await _append_committed(app, 1)
    async with app.begin() as conn:  # the app role calls audit_seal itself, without the key
        position = await conn.scalar(
            text("SELECT audit_seal(:s, :prev, :hash)"),
            {"s": first, "prev": GENESIS_HASH, "hash": "f" * 64},
        )
    assert position == 1
    with pytest.raises(DBAPIError, match="not the head"):
        async with app.begin() as conn:  # and cannot fork the chain from an older head
            await conn.execute(
                text("SELECT audit_seal(:s, :prev, :hash)"),
                {"s": first, "prev": GENESIS_HASH, "hash": "e" * 64},
            )
    later = await _append_committed(app, 2, 3)
    assert await _seal_until(AuditSealer(app, CHAIN_KEY, None), 2) == 2
    result = await verify_audit(app, CHAIN_KEY, None)
    assert not result.ok
    assert result.broken is not None
    assert (result.broken.position, result.broken.sequence) == (1, first)
    assert result.sealed == 3 and result.unsealed == 0
    async with app.connect() as conn:
        records = await list_audit_events(conn, AuditQuery(), None, 10)
    assert [r.sequence for r in records] == [later[1], later[0], first]
    assert all(r.row_hash and r.position for r in records)


async def test_audit_seal_refuses_a_row_whose_transaction_is_still_open(
    app: AsyncEngine,
) -> None:
    async with app.begin() as conn:
        sequence = await LOG.append(conn, _entry(1))
        with pytest.raises(DBAPIError, match="may still be running"):
            await conn.execute(
                text("SELECT audit_seal(:s, :prev, :hash)"),
                {"s": sequence, "prev": GENESIS_HASH, "hash": "f" * 64},
            )


async def test_a_round_is_skipped_while_another_sealer_holds_the_lock(app: AsyncEngine) -> None:
    await _append_committed(app, 1)
    sealer = AuditSealer(app, CHAIN_KEY, None)
    async with app.begin() as other:
        await other.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEAL_LOCK_KEY})
        assert await asyncio.wait_for(sealer.seal_once(), timeout=5) == 0
    assert await sealer.seal_once() == 1


async def test_listed_events_carry_their_seal_once_sealed(app: AsyncEngine) -> None:
    (sequence,) = await _append_committed(app, 1)
    async with app.connect() as conn:
        (record,) = await list_audit_events(conn, AuditQuery(target_id="user-1"), None, 10)
    assert (record.sequence, record.row_hash, record.position) == (sequence, "", None)
    assert record.actor_id == "admin-1" and record.details == {"new_role": "ADMIN"}
    await _seal_until(AuditSealer(app, CHAIN_KEY, None), 1)
    async with app.connect() as conn:
        (record,) = await list_audit_events(conn, AuditQuery(target_id="user-1"), None, 10)
    assert record.position == 1 and len(record.row_hash) == 64


async def _migrate_auth(
    databases: Provisioned, action: Literal["upgrade", "downgrade"], revision: str
) -> None:
    """Runs auth's migrations to `revision` as the owner."""
    await asyncio.to_thread(
        migrate_chain,
        AUTH_CHAIN,
        databases.auth_owner_dsn,
        databases.auth_app_role,
        action=action,
        revision=revision,
    )


async def test_auth_migration_0003_keeps_old_rows_and_they_get_sealed(
    databases: Provisioned, tmp_path: Path
) -> None:
    await _migrate_auth(databases, "upgrade", "0002")
    old_hash = "a" * 64
    owner = create_engine(databases.auth_owner_dsn, pool_size=1, application_name="au-mig")
    app = create_engine(databases.auth_app_dsn, pool_size=2, application_name="au-mig-app")
    try:
        async with app.begin() as conn:  # rows as the old design wrote them
            for sequence in (1, 2, 3):
                await conn.execute(
                    text(
                        "INSERT INTO audit_events VALUES (:s, now(), 'u', 'ADMIN', 'user.login',"
                        " 'user', 'u', 'r', '{\"ip\": \"x\"}', :h, :h)"
                    ),
                    {"s": sequence, "h": old_hash},
                )
        await _migrate_auth(databases, "upgrade", "head")
        store = FileCheckpointStore(tmp_path, CHECKPOINT_KEY)
        before = await verify_audit(app, CHAIN_KEY, store)
        assert before.ok and (before.sealed, before.unsealed) == (0, 3)
        async with app.begin() as conn:
            assert await LOG.append(conn, _entry(4)) == 4  # the sequence continues
        assert await _seal_until(AuditSealer(app, CHAIN_KEY, store), 4) == 4
        after = await verify_audit(app, CHAIN_KEY, store)
        assert after.ok and after.anchored, after.report()
        assert (after.sealed, after.unsealed) == (4, 0)
        with pytest.raises(ProgrammingError, match="permission denied"):
            async with app.begin() as conn:
                await conn.execute(text("INSERT INTO audit_events SELECT * FROM audit_events"))

        await _migrate_auth(databases, "downgrade", "0002")
        async with owner.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM audit_events"))
        assert count == 4
        await _migrate_auth(databases, "upgrade", "head")
    finally:
        await owner.dispose()
        await app.dispose()


async def test_verification_is_bounded_by_its_own_time_and_says_its_progress(
    app: AsyncEngine,
    owner: AsyncEngine,
    databases: Provisioned,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 2026-12-05: verify-audit ran under the session's 10 s statement bound, which
    its count of unsealed rows (a scan of the whole table) outgrows on a large log, and said
    nothing until it ended. `within_seconds` bounds the snapshot's statements (here a lock
    held on the table makes the read wait past it, on an engine with no bound of its own:
    57014, which the CLI answers with exit 3), and `progress` hears the seals read."""
    for n in range(5):
        async with app.begin() as conn:
            await LOG.append(conn, _entry(n))
    await AuditSealer(app, CHAIN_KEY, None).seal_once()
    monkeypatch.setattr("vaultpay_common.audit.verify.PROGRESS_EVERY", 2)
    heard: list[int] = []
    result = await verify_audit(app, CHAIN_KEY, None, within_seconds=60, progress=heard.append)
    assert result.ok and result.verified == 5
    assert heard == [2, 4]

    unbounded = create_engine(
        databases.app_dsn("wallet"), application_name="au-unbounded", statement_timeout_ms=0
    )
    try:
        async with owner.connect() as holder:
            await holder.begin()
            await holder.execute(text("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(DBAPIError) as waited:
                await verify_audit(unbounded, CHAIN_KEY, None, within_seconds=0.5)
            assert query_canceled(waited.value)
            await holder.rollback()
    finally:
        await unbounded.dispose()
