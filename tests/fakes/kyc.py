"""In-memory fakes for the kyc use cases: submissions, keys and rotations, the wallet peer.

Repositories keep their state in plain public attributes, so `FakeUnitOfWork` snapshots and
restores them: a refused command provably writes nothing.

    uow = FakeKycUnitOfWork()
    service = SubmissionService(lambda: uow, clock, FakeWalletDirectory({"alice"}), ...)
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tests.fakes.idempotency import FakeIdempotencyRecords
from tests.fakes.outbox import FakeOutbox
from tests.fakes.uow import FakeUnitOfWork
from vaultpay_kyc.domain.crypto import KeyRing, WrappedKey
from vaultpay_kyc.domain.errors import (
    KycAlreadySubmittedError,
    WalletRequiredError,
    WalletUnavailableError,
)
from vaultpay_kyc.domain.model import KycStatus, KycTier, Submission, highest_tier
from vaultpay_kyc.service_layer.ports import (
    KeyStillInUseError,
    ListedSubmission,
    QueueCursor,
    QueueFilter,
    RewrapRow,
    Rotation,
    SealedDocument,
)

__all__ = [
    "EPOCH",
    "FIRST_KEY_ID",
    "FakeKeyRepository",
    "FakeKycUnitOfWork",
    "FakeSubmissionRepository",
    "FakeWalletDirectory",
    "FixedClock",
    "key_ring_for_tests",
]

EPOCH = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)
FIRST_KEY_ID = "kek-0000000000000001"


def key_ring_for_tests(root: bytes = b"kyc-test-root") -> KeyRing:
    """KEKs derived from a fixed root: deterministic per key id, different across ids."""
    return KeyRing(lambda key_id: hashlib.sha256(root + b"/" + key_id.encode()).digest())


class FixedClock:
    def __init__(self, now: datetime = EPOCH) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta = timedelta(seconds=1)) -> None:
        self.current += delta


class FakeSubmissionRepository:
    def __init__(self) -> None:
        self.rows: dict[str, Submission] = {}
        self.secrets: dict[str, SealedDocument] = {}

    async def add(self, submission: Submission, sealed: SealedDocument) -> None:
        if await self.pending_for_user(submission.user_id) is not None:
            raise KycAlreadySubmittedError()  # the partial unique index (one pending per user)
        self.rows[submission.id] = submission
        self.secrets[submission.id] = sealed

    async def get(self, submission_id: str, *, for_update: bool = False) -> Submission | None:
        return self.rows.get(submission_id)

    async def sealed(self, submission_id: str, *, with_file: bool) -> SealedDocument | None:
        found = self.secrets.get(submission_id)
        if found is None or with_file:
            return found
        return dataclasses.replace(found, sealed_file=None)

    async def latest_for_user(self, user_id: str) -> Submission | None:
        mine = [s for s in self.rows.values() if s.user_id == user_id]
        return max(mine, key=lambda s: (s.created_at, s.id)) if mine else None

    async def pending_for_user(self, user_id: str) -> Submission | None:
        return next(
            (
                s
                for s in self.rows.values()
                if s.user_id == user_id and s.status is KycStatus.PENDING
            ),
            None,
        )

    async def held_tier(self, user_id: str) -> KycTier:
        return highest_tier(
            s.granted_tier
            for s in self.rows.values()
            if s.user_id == user_id and s.status is KycStatus.VERIFIED and s.granted_tier
        )

    async def update_review(self, submission: Submission) -> None:
        self.rows[submission.id] = dataclasses.replace(
            submission, key_id=self.rows[submission.id].key_id
        )

    async def verified_for_another_user(self, submission_id: str) -> bool:
        this = self.rows[submission_id]
        number_hash = self.secrets[submission_id].number_hash
        return any(
            s.user_id != this.user_id
            and s.status is KycStatus.VERIFIED
            and self.secrets[s.id].number_hash == number_hash
            for s in self.rows.values()
        )

    async def duplicates(self, number_hash: str, *, other_than_user: str) -> list[str]:
        same = [
            self.rows[sid]
            for sid, sealed in self.secrets.items()
            if sealed.number_hash == number_hash and self.rows[sid].user_id != other_than_user
        ]
        return [s.id for s in sorted(same, key=lambda s: (s.created_at, s.id))][:50]

    async def list_queue(
        self, flt: QueueFilter, after: QueueCursor | None, limit: int
    ) -> list[ListedSubmission]:
        def position(s: Submission) -> tuple[int, float, str]:
            if s.status is KycStatus.PENDING:
                return (0, s.created_at.timestamp(), s.id)
            assert s.reviewed_at is not None
            return (1, -s.reviewed_at.timestamp(), _invert(s.id))

        chosen = [
            s
            for s in self.rows.values()
            if (flt.status is None or s.status is flt.status)
            and (not flt.user_id or s.user_id == flt.user_id)
        ]
        chosen.sort(key=position)
        if after is not None:
            mark = (
                (1, -after.at.timestamp(), _invert(after.submission_id))
                if after.reviewed
                else (0, after.at.timestamp(), after.submission_id)
            )
            chosen = [s for s in chosen if position(s) > mark]
        result = []
        for s in chosen[:limit]:
            duplicate = bool(
                await self.duplicates(self.secrets[s.id].number_hash, other_than_user=s.user_id)
            )
            result.append(ListedSubmission(s, duplicate))
        return result

    async def pending_count(self) -> int:
        return sum(1 for s in self.rows.values() if s.status is KycStatus.PENDING)


def _invert(text: str) -> str:
    """Sorts ascending where `text` sorts descending (hex ids: reversed digits)."""
    return "".join(chr(0x10FFFF - ord(ch)) for ch in text)


class FakeKeyRepository:
    def __init__(self, submissions: FakeSubmissionRepository) -> None:
        self._submissions = submissions
        self.states: dict[str, str] = {FIRST_KEY_ID: "ACTIVE"}
        self.rotations: dict[str, Rotation] = {}
        # Rows another transaction holds (what SKIP LOCKED skips).
        self.locked: set[str] = set()
        # Drops to fail like the foreign key does on a race (kept across rollbacks).
        self._drop_failures = 0
        self.write_locks = 0
        self.activation_locks = 0

    def fail_next_drop(self) -> None:
        """The next drop fails as if a late submission still used the key."""
        self._drop_failures += 1

    async def active_key_id(self, *, for_write: bool = False) -> str:
        self.write_locks += int(for_write)
        return next(k for k, state in self.states.items() if state == "ACTIVE")

    async def lock_activation(self) -> None:
        self.activation_locks += 1

    async def activate(self, new_key_id: str, now: datetime) -> str:
        previous = await self.active_key_id()
        self.states[previous] = "RETIRING"
        self.states[new_key_id] = "ACTIVE"
        return previous

    async def add_rotation(self, rotation: Rotation) -> datetime:
        latest = [r.started_at + timedelta(microseconds=1) for r in self.rotations.values()]
        started_at = max([rotation.started_at, *latest])
        self.rotations[rotation.rotation_id] = dataclasses.replace(rotation, started_at=started_at)
        return started_at

    async def get_rotation(self, rotation_id: str) -> Rotation | None:
        return self.rotations.get(rotation_id)

    async def unfinished_rotation(self) -> Rotation | None:
        open_ = [r for r in self.rotations.values() if not r.finished]
        return max(open_, key=lambda r: r.started_at) if open_ else None

    def _on_retiring(self, skip: Sequence[str]) -> list[str]:
        secrets = self._submissions.secrets
        return sorted(
            sid
            for sid, sealed in secrets.items()
            if self.states.get(sealed.wrapped_key.key_id) == "RETIRING" and sid not in skip
        )

    async def rows_to_rewrap(self, limit: int, *, skip: Sequence[str] = ()) -> list[RewrapRow]:
        ids = [sid for sid in self._on_retiring(skip) if sid not in self.locked][:limit]
        return [
            RewrapRow(
                sid, self._submissions.rows[sid].user_id, self._submissions.secrets[sid].wrapped_key
            )
            for sid in ids
        ]

    async def count_rows_to_rewrap(self, *, skip: Sequence[str] = ()) -> int:
        return len(self._on_retiring(skip))

    async def set_wrapped_keys(self, rows: Sequence[tuple[str, WrappedKey]]) -> None:
        for sid, wrapped in rows:
            secrets = self._submissions.secrets
            secrets[sid] = dataclasses.replace(secrets[sid], wrapped_key=wrapped)
            self._submissions.rows[sid] = dataclasses.replace(
                self._submissions.rows[sid], key_id=wrapped.key_id
            )

    async def add_rewrapped(self, rotation_id: str, count: int) -> None:
        rotation = self.rotations[rotation_id]
        self.rotations[rotation_id] = dataclasses.replace(
            rotation, reencrypted_count=rotation.reencrypted_count + count
        )

    def _in_use(self) -> set[str]:
        return {s.wrapped_key.key_id for s in self._submissions.secrets.values()}

    async def drop_unused_keys(self) -> list[str]:
        if self._drop_failures:
            self._drop_failures -= 1
            raise KeyStillInUseError()
        dropped = sorted(
            k for k, state in self.states.items() if state == "RETIRING" and k not in self._in_use()
        )
        for key_id in dropped:
            del self.states[key_id]
        return dropped

    async def retiring_key_ids(self) -> list[str]:
        return sorted(k for k, state in self.states.items() if state == "RETIRING")

    async def finish_rotations(self, now: datetime, *, through_key: str) -> list[Rotation]:
        made_active = [r.started_at for r in self.rotations.values() if r.to_key_id == through_key]
        newest = max(made_active) if made_active else None
        finished = []
        for rotation_id, rotation in list(self.rotations.items()):
            if not rotation.finished and (newest is None or rotation.started_at <= newest):
                done = dataclasses.replace(rotation, finished_at=now)
                self.rotations[rotation_id] = done
                finished.append(done)
        return finished


class FakeKycUnitOfWork(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.submissions = FakeSubmissionRepository()
        self.keys = FakeKeyRepository(self.submissions)
        self.idempotency = FakeIdempotencyRecords()
        self.outbox = FakeOutbox("kyc")

    def _state_holders(self) -> list[object]:
        return [self.submissions, self.keys, self.idempotency, self.outbox]


class FakeWalletDirectory:
    """Users who have a wallet; `down` makes every check fail as wallet being unreachable."""

    def __init__(self, users: set[str] | None = None) -> None:
        self.users = set(users or ())
        self.down = False
        self.checks = 0

    async def require_wallet(self, user_id: str) -> None:
        self.checks += 1
        if self.down:
            raise WalletUnavailableError()
        if user_id not in self.users:
            raise WalletRequiredError()
