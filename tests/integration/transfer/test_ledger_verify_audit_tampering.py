"""`vaultpay-transfer verify-ledger` on a tampered audit chain (own module: its own chain). The
owner deletes the newest sealed rows with the triggers off: a shorter chain that still links
up, caught only because its head no longer reaches the signed checkpoint outside the database;
and the same chain with a checkpoint directory that holds no checkpoint is not proven whole.
Both exit 1. (Without any checkpoint directory nothing can be anchored: a warning, exit 0.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.transfer.conftest import LedgerWorld, run_transfer_cli
from vaultpay_common.audit import AuditEntry, AuditLog, AuditSealer, FileCheckpointStore
from vaultpay_transfer.settings import TransferSettings


def _settings(env: dict[str, str]) -> TransferSettings:
    fields: dict[str, Any] = {
        k.removeprefix("TRANSFER_").lower(): v
        for k, v in env.items()
        if k != "TRANSFER_DATABASE_CHAIN_ROLES"
    }
    return TransferSettings(**fields)


async def test_verify_ledger_fails_on_deleted_audit_rows_and_on_an_unanchored_chain(
    ledger: LedgerWorld, tmp_path: Path
) -> None:
    env = {**ledger.env, "TRANSFER_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    settings = _settings(env)
    assert settings.audit_checkpoint_dir is not None
    store = FileCheckpointStore(settings.audit_checkpoint_dir, settings.audit_checkpoint_key)
    for n in range(3):
        async with ledger.engine.begin() as conn:
            entry = AuditEntry("transaction.reversed", "transaction", f"t-{n}", {}, "staff-1")
            await AuditLog().append(conn, entry)
    sealer = AuditSealer(ledger.engine, settings.audit_key, store)
    assert await sealer.seal_once() == 3  # and its checkpoint saved

    clean = run_transfer_cli(env, "verify-ledger")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "ok   audit_chain_intact: 3 audit rows sealed, 3 verified" in clean.stdout

    empty = {**ledger.env, "TRANSFER_AUDIT_CHECKPOINT_DIR": str(tmp_path / "empty")}
    unanchored = run_transfer_cli(empty, "verify-ledger")  # its checkpoint is not there
    assert unanchored.returncode == 1, unanchored.stdout + unanchored.stderr
    assert "NOT PROVEN" in unanchored.stdout
    storeless = run_transfer_cli(ledger.env, "verify-ledger")  # no checkpoint directory
    assert storeless.returncode == 0, storeless.stdout + storeless.stderr
    assert "warning: no checkpoint store is configured" in storeless.stdout

    owner = await ledger.owner()
    try:
        await owner.execute(
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete"
        )
        await owner.execute("ALTER TABLE audit_seals DISABLE TRIGGER audit_seals_no_update_delete")
        newest = await owner.fetchval("SELECT max(position) FROM audit_seals")
        sequence = await owner.fetchval(
            "SELECT sequence FROM audit_seals WHERE position = $1", newest
        )
        await owner.execute("DELETE FROM audit_seals WHERE position = $1", newest)
        await owner.execute("DELETE FROM audit_events WHERE sequence = $1", sequence)
        await owner.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")
        await owner.execute("ALTER TABLE audit_seals ENABLE TRIGGER audit_seals_no_update_delete")
    finally:
        await owner.close()

    tampered = run_transfer_cli(env, "verify-ledger")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "FAIL audit_chain_intact" in tampered.stdout, tampered.stdout
    assert "BROKEN" in tampered.stdout
    # Said as verify-audit says it, not a dataclass's repr ("ChainBreak(position=…").
    assert "ChainBreak(" not in tampered.stdout, tampered.stdout
