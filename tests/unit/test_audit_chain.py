"""The audit chain and its checkpoints, without a database."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import pytest

import vaultpay_common.audit as audit_package
from vaultpay_common.audit.checkpoints import (
    CheckpointConflictError,
    CheckpointInvalidError,
    CheckpointUnwritableError,
    FileCheckpointStore,
)
from vaultpay_common.audit.model import (
    GENESIS_HASH,
    AuditRow,
    AuditVerification,
    ChainBreak,
    ChainVerifier,
    Checkpoint,
    Seal,
    check_against_checkpoint,
    checkpoint_is_authentic,
    compute_row_hash,
    seal_rows,
    sign_checkpoint,
)
from vaultpay_common.audit.tables import SEAL_LOCK_KEY, audit_ddl, split_sql

KEY = b"k" * 32
CHECKPOINT_KEY = b"p" * 32
START = datetime(2026, 1, 1, tzinfo=UTC)


def _rows(n: int, *, first: int = 1) -> list[AuditRow]:
    return [
        AuditRow(
            sequence=seq,
            created_at=START + timedelta(seconds=seq),
            actor_id="u1",
            actor_role="ADMIN",
            action="user.role_changed",
            target_type="user",
            target_id=f"t{seq}",
            request_id="r",
            details={"new_role": "MODERATOR"},
        )
        for seq in range(first, first + n)
    ]


def _verify(
    seals: list[Seal], rows: list[AuditRow | None], *, anchor: int | None = None
) -> ChainVerifier:
    chain = ChainVerifier(KEY, anchor=anchor)
    for seal, row in zip(seals, rows, strict=True):
        chain.feed(seal, row)
    return chain


def test_an_intact_chain_verifies() -> None:
    rows = _rows(5)
    chain = _verify(seal_rows(KEY, None, rows), list(rows))
    assert chain.broken is None
    assert (chain.seen, chain.verified) == (5, 5)


def test_rows_are_chained_in_the_order_given_not_by_sequence() -> None:
    late, early = _rows(2, first=7)[1], _rows(1, first=3)[0]  # committed in this order
    seals = seal_rows(KEY, None, [late])
    seals += seal_rows(KEY, seals[-1], [early])
    assert [(s.position, s.sequence) for s in seals] == [(1, 8), (2, 3)]
    assert seals[1].prev_hash == seals[0].row_hash
    assert _verify(seals, [late, early]).broken is None


def test_changed_content_is_detected_at_that_position() -> None:
    rows = _rows(5)
    seals = seal_rows(KEY, None, rows)
    forged: list[AuditRow | None] = list(rows)
    forged[2] = replace(rows[2], details={"new_role": "SUPER_ADMIN"})
    chain = _verify(seals, forged)
    assert chain.broken == ChainBreak(3, "row content does not match its seal", 3)
    assert (chain.seen, chain.verified) == (5, 2)


def test_a_changed_time_is_detected() -> None:
    rows = _rows(2)
    seals = seal_rows(KEY, None, rows)
    moved = replace(rows[1], created_at=rows[1].created_at + timedelta(microseconds=1))
    assert _verify(seals, [rows[0], moved]).broken is not None


def test_a_sealed_row_that_is_gone_is_detected() -> None:
    rows = _rows(3)
    chain = _verify(seal_rows(KEY, None, rows), [rows[0], None, rows[2]])
    assert chain.broken == ChainBreak(2, "the sealed row is missing", 2)


def test_a_seal_deleted_in_the_middle_is_detected() -> None:
    rows = _rows(3)
    seals = seal_rows(KEY, None, rows)
    chain = _verify([seals[0], seals[2]], [rows[0], rows[2]])
    assert chain.broken is not None
    assert chain.broken.position == 2
    assert "gap" in chain.broken.reason


def test_a_rehashed_row_breaks_the_link_to_the_next() -> None:
    rows = _rows(4)
    seals = seal_rows(KEY, None, rows)
    forged_row = replace(rows[1], action="user.deactivated")
    forged_hash = compute_row_hash(KEY, seals[1].prev_hash, 2, forged_row)
    seals[1] = replace(seals[1], row_hash=forged_hash)  # someone who somehow had the key
    chain = _verify(seals, [rows[0], forged_row, rows[2], rows[3]])
    assert chain.broken is not None
    assert chain.broken.position == 3
    assert "prev_hash" in chain.broken.reason


def test_a_chain_rebuilt_without_the_key_does_not_verify() -> None:
    rows = _rows(3)
    guessed = seal_rows(b"g" * 32, None, rows)
    chain = _verify(guessed, list(rows))
    assert chain.broken is not None
    assert chain.broken.position == 1


def test_a_seal_moved_to_another_position_does_not_verify() -> None:
    rows = _rows(2)
    seals = seal_rows(KEY, None, rows)
    # Same row, same link, claimed at position 1 by a forger who reuses the hash of position 2.
    moved = Seal(1, 2, GENESIS_HASH, seals[1].row_hash)
    assert _verify([moved], [rows[1]]).broken is not None


def test_the_row_hash_binds_the_position() -> None:
    (row,) = _rows(1)
    assert compute_row_hash(KEY, GENESIS_HASH, 1, row) != compute_row_hash(
        KEY, GENESIS_HASH, 2, row
    )


def test_a_signed_checkpoint_verifies_and_any_change_does_not() -> None:
    checkpoint = sign_checkpoint(CHECKPOINT_KEY, 5, "a" * 64, START)
    assert checkpoint_is_authentic(CHECKPOINT_KEY, checkpoint)
    assert not checkpoint_is_authentic(CHECKPOINT_KEY, replace(checkpoint, position=6))
    assert not checkpoint_is_authentic(CHECKPOINT_KEY, replace(checkpoint, head_hash="b" * 64))
    assert not checkpoint_is_authentic(KEY, checkpoint)


def test_a_checkpoint_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone"):
        sign_checkpoint(CHECKPOINT_KEY, 1, "a" * 64, datetime(2026, 1, 1))


def _checkpoint_of(seals: list[Seal], position: int) -> Checkpoint:
    return sign_checkpoint(CHECKPOINT_KEY, position, seals[position - 1].row_hash, START)


def test_a_chain_that_reaches_the_checkpoint_is_anchored() -> None:
    rows = _rows(4)
    seals = seal_rows(KEY, None, rows)
    checkpoint = _checkpoint_of(seals, 3)
    chain = _verify(seals, list(rows), anchor=3)
    assert check_against_checkpoint(chain, checkpoint) is None


def test_newest_rows_deleted_before_the_checkpoint_are_reported() -> None:
    rows = _rows(4)
    seals = seal_rows(KEY, None, rows)
    checkpoint = _checkpoint_of(seals, 4)
    chain = _verify(seals[:2], list(rows[:2]), anchor=4)  # a valid, shorter chain
    assert chain.broken is None
    broken = check_against_checkpoint(chain, checkpoint)
    assert broken is not None
    assert "rows deleted after position 2" in broken.reason


def test_a_chain_rewritten_up_to_the_checkpoint_is_reported() -> None:
    rows = _rows(3)
    seals = seal_rows(KEY, None, rows)
    other = seal_rows(KEY, seals[0], [replace(rows[1], target_id="x"), rows[2]])
    checkpoint = _checkpoint_of(seals, 3)
    chain = _verify(
        [seals[0], *other], [rows[0], replace(rows[1], target_id="x"), rows[2]], anchor=3
    )
    broken = check_against_checkpoint(chain, checkpoint)
    assert broken is not None
    assert broken.position == 3
    assert "rewritten" in broken.reason


def test_the_report_says_what_is_broken_unsealed_and_anchored() -> None:
    result = AuditVerification(
        sealed=10,
        verified=6,
        broken=ChainBreak(7, "row content does not match its seal", 12),
        unsealed=2,
        oldest_unsealed_age=timedelta(seconds=3.5),
        checkpoint=None,
        warnings=("no checkpoint",),
    )
    report = result.report()
    assert not result.ok
    assert "10 rows sealed, 6 verified" in report
    assert "BROKEN at position 7 (sequence 12): row content does not match its seal" in report
    assert "not sealed yet: 2 rows, the oldest 3.5 s old" in report
    assert "WARNING: no checkpoint" in report
    fine = AuditVerification(
        10, 10, None, 0, None, sign_checkpoint(CHECKPOINT_KEY, 10, "a" * 64, START)
    )
    assert fine.ok and fine.anchored
    assert "intact" in fine.report() and "reached, hash matches" in fine.report()


async def test_the_file_store_keeps_the_latest_signed_checkpoint(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "cp", CHECKPOINT_KEY)
    assert await store.latest() is None
    assert await store.save(3, "a" * 64, START) is True
    assert await store.save(2, "b" * 64, START) is False  # never backwards
    assert await store.save(3, "a" * 64, START) is False
    latest = await store.latest()
    assert isinstance(latest, Checkpoint)
    assert (latest.position, latest.head_hash) == (3, "a" * 64)
    assert [p.name for p in (tmp_path / "cp").iterdir() if p.name.endswith(".tmp")] == []


async def test_the_file_store_refuses_another_hash_for_a_checkpointed_position(
    tmp_path: Path,
) -> None:
    store = FileCheckpointStore(tmp_path, CHECKPOINT_KEY)
    await store.save(3, "a" * 64, START)
    with pytest.raises(CheckpointConflictError):
        await store.save(3, "b" * 64, START)


async def test_a_directory_that_cannot_be_written_is_an_alarm_of_its_own(tmp_path: Path) -> None:
    """A volume the service's user cannot write (a Kubernetes volume left root-owned), or a
    path that is no directory: `CheckpointUnwritableError`, which the sealer reports at ERROR,
    not a bare OSError logged as a passing WARNING (review of 2026-12-05)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = FileCheckpointStore(blocker / "checkpoints", CHECKPOINT_KEY)
    with pytest.raises(CheckpointUnwritableError, match="no checkpoint written in"):
        await store.save(3, "a" * 64, START)


async def test_a_forged_or_unreadable_checkpoint_file_is_refused(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path, CHECKPOINT_KEY)
    await store.save(3, "a" * 64, START)
    stored = json.loads(store.path.read_text())
    store.path.write_text(json.dumps({**stored, "position": 30}))
    with pytest.raises(CheckpointInvalidError, match="signature"):
        await store.latest()
    with pytest.raises(CheckpointInvalidError):  # evidence is not overwritten either
        await store.save(40, "c" * 64, START)
    store.path.write_text("{not json")
    with pytest.raises(CheckpointInvalidError):
        await store.latest()


def test_sql_scripts_split_into_statements_keeping_function_bodies_whole() -> None:
    script = """
    -- a comment
    CREATE TABLE t (a int);
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1;
        RETURN 1;
    END
    $$;
    GRANT SELECT ON t TO r;
    """
    statements = split_sql(script)
    assert len(statements) == 3
    assert "RETURN 1;" in statements[1]
    assert statements[2].strip() == "GRANT SELECT ON t TO r"


def test_the_ddl_grants_the_app_role_no_insert_and_refuses_unsafe_names() -> None:
    ddl = audit_ddl("vaultpay_app")
    grants = [s for s in ddl if s.startswith("GRANT")]
    assert grants and all("INSERT" not in g for g in grants)
    assert any("SECURITY DEFINER" in s and "audit_seal" in s for s in ddl)
    with pytest.raises(ValueError, match="unsafe"):
        audit_ddl('x"; DROP TABLE users; --')


def test_the_sealers_lock_key_is_the_one_audit_seal_takes() -> None:
    sql = files("vaultpay_common.audit").joinpath("sql", "functions.sql").read_text()
    assert f"pg_advisory_xact_lock({SEAL_LOCK_KEY})" in sql


def test_the_model_imports_no_database_library() -> None:
    source = Path(audit_package.__file__).with_name("model.py").read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"sqlalchemy", "asyncpg", "grpc", "redis"}


def test_the_package_exports_what_it_says() -> None:
    for name in audit_package.__all__:
        assert hasattr(audit_package, name), name
    for name in ("AuditEntry", "AuditQuery", "AuditRecord", "AuditLog", "list_audit_events"):
        assert name in audit_package.__all__
