"""What the kyc use cases need from the outside world, as protocols.

The SQL adapters (`adapters/submissions_sql.py`, `adapters/keys_sql.py`,
`adapters/unit_of_work.py`) and the test fakes (`tests/fakes/kyc.py`) implement the
repositories; the composition root provides the `WalletDirectory` (a gRPC client of wallet)
and the `UserRoleSource` (a gRPC client of auth, `adapters/auth_peer.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from vaultpay_common.audit import AuditEntry
from vaultpay_common.context import Role
from vaultpay_common.idempotency import IdempotencyRecords
from vaultpay_common.outbox import Outbox
from vaultpay_kyc.domain.crypto import WrappedKey
from vaultpay_kyc.domain.model import KycStatus, KycTier, Submission

__all__ = [
    "KeyRepository",
    "KeyStillInUseError",
    "KycUnitOfWork",
    "ListedSubmission",
    "QueueCursor",
    "QueueFilter",
    "RewrapRow",
    "Rotation",
    "SealedDocument",
    "SubmissionRepository",
    "UserRoleSource",
    "UserStanding",
    "WalletDirectory",
]


@dataclass(frozen=True, slots=True)
class SealedDocument:
    """A submission's secrets as stored: all ciphertext, plus the keyed hash of the number."""

    number_hash: str
    wrapped_key: WrappedKey
    sealed_number: bytes
    sealed_file: bytes | None = None


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """Filters of AdminListKycSubmissions; None/"" means any."""

    status: KycStatus | None = None
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class QueueCursor:
    """A position in the queue order: pending (oldest first) before reviewed (newest first).

    `reviewed` says which part; `at` is created_at (pending) or reviewed_at (reviewed).
    """

    reviewed: bool
    at: datetime
    submission_id: str


@dataclass(frozen=True, slots=True)
class ListedSubmission:
    submission: Submission
    # Another user submitted the same document (same keyed hash).
    possible_duplicate: bool


@dataclass(frozen=True, slots=True)
class RewrapRow:
    """A submission whose data key is wrapped under a retiring key."""

    submission_id: str
    user_id: str
    wrapped_key: WrappedKey


@dataclass(frozen=True, slots=True)
class Rotation:
    rotation_id: str
    from_key_id: str
    to_key_id: str
    started_by: str
    started_at: datetime
    reencrypted_count: int = 0
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


class KeyStillInUseError(Exception):
    """Dropping a retiring key raced a submission that was being written under it; sweep
    again and retry (the database's foreign key refused the drop)."""


class SubmissionRepository(Protocol):
    async def add(self, submission: Submission, sealed: SealedDocument) -> None:
        """Raises KycAlreadySubmittedError when the user already has a pending submission
        (the race-proof rule; the FULL rule is `check_may_submit`'s)."""
        ...

    async def get(self, submission_id: str, *, for_update: bool = False) -> Submission | None: ...

    async def sealed(self, submission_id: str, *, with_file: bool) -> SealedDocument | None:
        """The ciphertexts and the wrapped data key, read together (one row version)."""
        ...

    async def latest_for_user(self, user_id: str) -> Submission | None: ...

    async def pending_for_user(self, user_id: str) -> Submission | None:
        """The user's PENDING submission, if any (there is at most one)."""
        ...

    async def held_tier(self, user_id: str) -> KycTier:
        """The highest tier the user's VERIFIED submissions granted; NONE without one."""
        ...

    async def update_review(self, submission: Submission) -> None:
        """Stores status, tier, reason, reviewer and review time."""
        ...

    async def verified_for_another_user(self, submission_id: str) -> bool:
        """Whether another user holds a VERIFIED submission of this submission's document
        (same keyed hash). Takes the document's lock first, held until the transaction ends,
        so two approvals of one document are serialised and the second sees the first's
        commit: of two users' concurrent approvals, one passes."""
        ...

    async def duplicates(self, number_hash: str, *, other_than_user: str) -> list[str]:
        """Ids of other users' submissions with the same keyed hash, oldest first (≤ 50)."""
        ...

    async def list_queue(
        self, flt: QueueFilter, after: QueueCursor | None, limit: int
    ) -> list[ListedSubmission]:
        """At most `limit` submissions after `after` in the queue order."""
        ...

    async def pending_count(self) -> int: ...


class KeyRepository(Protocol):
    """The key-encryption keys in use (ids and states only: the keys live in settings),
    rotations, and the rows a rotation must re-wrap."""

    async def active_key_id(self, *, for_write: bool = False) -> str:
        """The active key's id. `for_write` holds it (FOR KEY SHARE) until the transaction
        ends, so it cannot be dropped under a submission being written with it."""
        ...

    async def lock_activation(self) -> None:
        """Takes `activate`'s lock now, for the rest of the transaction: what is read after it
        (an unfinished rotation) cannot change before this transaction's activation."""
        ...

    async def activate(self, new_key_id: str, now: datetime) -> str:
        """Makes `new_key_id` the active key (the old one starts retiring); returns the old
        one's id. Rotations are serialised (the second waits for the first to commit)."""
        ...

    async def add_rotation(self, rotation: Rotation) -> datetime:
        """Records a rotation, under `activate`'s lock, and returns its start as recorded:
        `rotation.started_at`, or just after the latest rotation recorded before it if that
        is later (the clocks of two hosts, or two starts a moment apart), so that rotations
        are in the order their activations took the lock (`finish_rotations` relies on it)."""
        ...

    async def get_rotation(self, rotation_id: str) -> Rotation | None: ...

    async def unfinished_rotation(self) -> Rotation | None:
        """The newest rotation not finished yet."""
        ...

    async def rows_to_rewrap(self, limit: int, *, skip: Sequence[str] = ()) -> list[RewrapRow]:
        """Up to `limit` submissions on retiring keys, locked (others' locked rows are skipped)."""
        ...

    async def count_rows_to_rewrap(self, *, skip: Sequence[str] = ()) -> int: ...

    async def set_wrapped_keys(self, rows: Sequence[tuple[str, WrappedKey]]) -> None: ...

    async def add_rewrapped(self, rotation_id: str, count: int) -> None: ...

    async def drop_unused_keys(self) -> list[str]:
        """Deletes retiring keys no submission uses; raises KeyStillInUseError on a race."""
        ...

    async def retiring_key_ids(self) -> list[str]: ...

    async def finish_rotations(self, now: datetime, *, through_key: str) -> list[Rotation]:
        """Marks finished every unfinished rotation started no later than the one that made
        `through_key` active (all of them if none did); returns those this call finished. A
        rotation started since (a newer key) is left to finish itself."""
        ...


class WalletDirectory(Protocol):
    async def require_wallet(self, user_id: str) -> None:
        """Raises WalletRequiredError when the user has no wallet, WalletUnavailableError
        when wallet cannot say."""
        ...


@dataclass(frozen=True, slots=True)
class UserStanding:
    """A user's current role and whether auth still has them active (not deactivated)."""

    role: Role
    active: bool


class UserRoleSource(Protocol):
    """A user's current role, and whether they are active, from auth's GetUserRole
    (`adapters/auth_peer.py`): the rank rule of staff reviews (`check_reviewer_outranks_owner`)
    and an approval's refusal of a deactivated owner."""

    async def role_of(self, user_id: str) -> Role:
        """Raises an UnavailableError when auth cannot tell (down, too slow, an answer
        without a role, or the user unknown to it): the decision then fails closed."""
        ...

    async def standing_of(self, user_id: str) -> UserStanding:
        """The role and state, in one question to auth. Raises an UnavailableError as
        `role_of` does, and also when auth's answer does not say whether the user is active
        (an auth older than the field): an approval then fails closed."""
        ...


class KycUnitOfWork(Protocol):
    @property
    def submissions(self) -> SubmissionRepository: ...
    @property
    def keys(self) -> KeyRepository: ...
    @property
    def idempotency(self) -> IdempotencyRecords: ...
    @property
    def outbox(self) -> Outbox: ...

    async def audit(self, entry: AuditEntry) -> None: ...
    async def commit(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
