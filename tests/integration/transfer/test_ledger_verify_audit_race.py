"""AdminVerifyLedger's audit check while the sealer runs: a checkpoint saved after the ledger's
snapshot was taken must not read as rows deleted (own module: its own audit chain)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.transfer.conftest import LedgerWorld
from vaultpay_common.audit import AuditEntry, AuditLog, AuditSealer, FileCheckpointStore
from vaultpay_common.audit.model import Checkpoint
from vaultpay_transfer.adapters.verify_sql import SqlLedgerAuditor

CHAIN_KEY = b"k" * 32


class _SealerRacesTheRead(FileCheckpointStore):
    """The checkpoint file, with a sealer round (a new audit row sealed, its checkpoint saved)
    committing just as the verifier asks for the latest checkpoint, once."""

    def __init__(self, directory: Path, ledger: LedgerWorld) -> None:
        super().__init__(directory, b"p" * 32)
        self._directory_of_sealer = directory
        self._ledger = ledger
        self.raced = False

    async def latest(self) -> Checkpoint | None:
        if not self.raced:
            self.raced = True
            async with self._ledger.engine.begin() as conn:
                await AuditLog().append(
                    conn, AuditEntry("transfer.test", "transaction", "t-1", {}, "staff-1")
                )
            store = FileCheckpointStore(self._directory_of_sealer, b"p" * 32)
            sealer = AuditSealer(self._ledger.engine, CHAIN_KEY, store)
            assert await sealer.seal_once() >= 1
        return await super().latest()


async def test_a_checkpoint_saved_while_the_ledger_is_checked_is_not_read_as_tampering(
    ledger: LedgerWorld, tmp_path: Path
) -> None:
    store = _SealerRacesTheRead(tmp_path / "checkpoints", ledger)
    checks = {c.name: c for c in await SqlLedgerAuditor(ledger.engine, CHAIN_KEY, store).check()}
    assert store.raced
    assert checks["audit_chain_intact"].ok, checks["audit_chain_intact"].detail
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
