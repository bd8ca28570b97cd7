"""Where the sealer anchors the head of the chain, outside the database.

Someone who can disable the audit triggers can delete the newest rows and their seals; what is
left is still a valid chain. A signed checkpoint (position, head hash, time) kept elsewhere
shows the chain was longer. A store only has to keep the latest checkpoint and never go
backwards; `FileCheckpointStore` does that with a directory (shared by the replicas that seal
one database, and by whoever runs `verify-audit`):

    store = FileCheckpointStore(Path("/var/lib/vaultpay/audit"), settings.audit_checkpoint_key)
    await store.save(position=42, head_hash="ab…", created_at=now)
    latest = await store.latest()      # None, or a checkpoint whose signature was checked

`latest()` raises `CheckpointInvalidError` when the stored checkpoint is unreadable or its
signature is wrong; that is evidence, so `save` refuses to overwrite it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Protocol

from vaultpay_common.audit.model import Checkpoint, checkpoint_is_authentic, sign_checkpoint

__all__ = [
    "CheckpointConflictError",
    "CheckpointInvalidError",
    "CheckpointStore",
    "CheckpointUnwritableError",
    "FileCheckpointStore",
]

_FILE = "audit-checkpoint.json"
_LOCK = ".audit-checkpoint.lock"


class CheckpointInvalidError(Exception):
    """The stored checkpoint is unreadable or not signed with our key."""


class CheckpointConflictError(Exception):
    """A different head hash for a position already checkpointed: the chain was rewritten."""


class CheckpointUnwritableError(Exception):
    """The directory cannot be written (not writable by the service's user, read-only, full):
    no checkpoint is kept until someone fixes it."""


class CheckpointStore(Protocol):
    async def latest(self) -> Checkpoint | None:
        """The newest checkpoint (signature checked), None if there is none yet."""
        ...

    async def save(self, position: int, head_hash: str, created_at: datetime) -> bool:
        """Signs and stores a checkpoint; False (and no change) if a later one is stored."""
        ...


class FileCheckpointStore:
    """The latest checkpoint as one JSON file in `directory`, replaced atomically."""

    def __init__(self, directory: Path, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the checkpoint key must be at least 32 bytes")
        self._directory = directory
        self._key = key

    @property
    def path(self) -> Path:
        return self._directory / _FILE

    async def latest(self) -> Checkpoint | None:
        return await asyncio.to_thread(self._read)

    async def save(self, position: int, head_hash: str, created_at: datetime) -> bool:
        checkpoint = sign_checkpoint(self._key, position, head_hash, created_at)
        try:
            return await asyncio.to_thread(self._write, checkpoint)
        except OSError as exc:
            raise CheckpointUnwritableError(
                f"no checkpoint written in {self._directory}: {exc.strerror or exc}"
            ) from exc

    def _read(self) -> Checkpoint | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            checkpoint = Checkpoint(
                position=int(data["position"]),
                head_hash=str(data["head_hash"]),
                created_at=datetime.fromisoformat(str(data["created_at"])),
                signature=str(data["signature"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointInvalidError(f"{self.path} is not a checkpoint: {exc}") from exc
        if not checkpoint_is_authentic(self._key, checkpoint):
            raise CheckpointInvalidError(f"{self.path} has a bad signature")
        return checkpoint

    def _write(self, checkpoint: Checkpoint) -> bool:
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self._directory / _LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # replicas sharing the directory take turns
            current = self._read()
            if current is not None:
                if current.position > checkpoint.position:
                    return False
                if current.position == checkpoint.position:
                    if current.head_hash != checkpoint.head_hash:
                        raise CheckpointConflictError(
                            f"position {checkpoint.position} is checkpointed with another hash"
                        )
                    return False
            self._replace(checkpoint)
            return True

    def _replace(self, checkpoint: Checkpoint) -> None:
        body = json.dumps(
            {
                "position": checkpoint.position,
                "head_hash": checkpoint.head_hash,
                "created_at": checkpoint.created_at.isoformat(),
                "signature": checkpoint.signature,
            },
            sort_keys=True,
        ).encode()
        fd, temp = tempfile.mkstemp(dir=self._directory, prefix=".checkpoint-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        directory = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
