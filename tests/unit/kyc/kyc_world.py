"""A kyc service wired to fakes, shared by the kyc unit tests."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from tests.fakes.kyc import (
    FakeKycUnitOfWork,
    FakeWalletDirectory,
    FixedClock,
    key_ring_for_tests,
)
from tests.fakes.roles import FakeUserRoles
from tests.unit.kyc import sample_files
from vaultpay_common.context import Role
from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_kyc.domain.crypto import (
    DataKey,
    DocumentHasher,
    EnvelopeCipher,
    Field,
    SubmissionRef,
)
from vaultpay_kyc.domain.documents import DocumentType, verhoeff_check_digit
from vaultpay_kyc.domain.model import KycTier, Submission
from vaultpay_kyc.domain.staff_reads import StaffViewer
from vaultpay_kyc.service_layer.commands import (
    ApproveKyc,
    SubmissionDetails,
    SubmitKyc,
    UploadKycDocument,
)
from vaultpay_kyc.service_layer.ports import SealedDocument, UserStanding
from vaultpay_kyc.service_layer.review import ReviewService
from vaultpay_kyc.service_layer.rotation import KeyRotationService
from vaultpay_kyc.service_layer.submissions import SubmissionService

__all__ = [
    "JPEG",
    "MOD",
    "PDF",
    "PNG",
    "FakeOwnerStandings",
    "World",
    "aadhaar",
    "chunks_of",
    "key",
    "upload_command",
]

PDF = b"%PDF-1.7\n" + b"identity scan " * 64 + b"\n%%EOF\n"
# Real (1x1) images: kyc walks an image's structure to its end (the files that were magic
# bytes and filler are refused, as any image that is not whole).
PNG = sample_files.png(extra=sample_files.png_chunk(b"tEXt", b"Comment\x00" + b"scan " * 200))
JPEG = sample_files.jpeg(before_frame=b"\xff\xfe" + (2 + 500).to_bytes(2, "big") + b"\x55" * 500)
MAX_FILE = 64 * 1024
MAX_CHUNK = 4 * 1024
# The role of the reviewers the tests name ("mod", "other-mod"); auth (`World.roles`) ranks
# every user it was not told about as a plain user.
MOD = Role.MODERATOR


class FakeOwnerStandings(FakeUserRoles):
    """auth's roles (`FakeUserRoles`) and states: a user in `deactivated` is not active.
    `standing_of` asks once, as `role_of` does (recorded in `asked`, refused while `down`)."""

    def __init__(self, roles: dict[str, Role] | None = None) -> None:
        super().__init__(roles)
        self.deactivated: set[str] = set()

    async def standing_of(self, user_id: str) -> UserStanding:
        role = await self.role_of(user_id)
        return UserStanding(role, user_id not in self.deactivated)


def key(caller: str = "alice", body: bytes = b"", method: str = "M") -> IdempotencyKey:
    return IdempotencyKey(caller, method, str(uuid.uuid4()), request_fingerprint(body))


def aadhaar(first_eleven: str = "23412341234") -> str:
    return first_eleven + verhoeff_check_digit(first_eleven)


async def chunks_of(data: bytes, size: int = MAX_CHUNK) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def from_list(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def upload_command(
    user_id: str,
    data: bytes,
    *,
    content_type: str = "application/pdf",
    number: str = "ABCPE1234F",
    size: int | None = None,
    sha256: str | None = None,
    idempotency: IdempotencyKey | None = None,
) -> UploadKycDocument:
    return UploadKycDocument(
        user_id,
        DocumentType.PAN,
        number,
        content_type,
        len(data) if size is None else size,
        hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        idempotency,
    )


@dataclass
class World:
    uow: FakeKycUnitOfWork = field(default_factory=FakeKycUnitOfWork)
    clock: FixedClock = field(default_factory=FixedClock)
    wallets: FakeWalletDirectory = field(
        default_factory=lambda: FakeWalletDirectory({"alice", "bob", "carol", "mod"})
    )
    roles: FakeOwnerStandings = field(default_factory=FakeOwnerStandings)

    def __post_init__(self) -> None:
        factory = lambda: self.uow  # noqa: E731
        self.ring = key_ring_for_tests()
        self.cipher = EnvelopeCipher(self.ring)
        self.hasher = DocumentHasher(b"h" * 32)
        self.submissions = SubmissionService(
            factory,
            self.clock,
            self.wallets,
            self.cipher,
            self.hasher,
            max_file_bytes=MAX_FILE,
            max_chunk_bytes=MAX_CHUNK,
        )
        self.review = ReviewService(
            factory, self.clock, self.cipher, hasher=self.hasher, roles=self.roles
        )
        self.sleeps: list[float] = []
        self.rotation = KeyRotationService(
            factory,
            self.clock,
            self.cipher,
            batch_size=2,
            sleep=self._sleep,
            monotonic=lambda: self.clock.now().timestamp(),
        )

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance()

    async def submit(
        self,
        user_id: str = "alice",
        number: str = "ABCPE1234F",
        *,
        document_type: DocumentType = DocumentType.PAN,
        file: bytes = b"",
        content_type: str = "",
    ) -> Submission:
        submission = await self.submissions.submit(
            SubmitKyc(user_id, document_type, number, file, content_type, key(user_id))
        )
        self.clock.advance()
        return submission

    async def approve(
        self,
        submission: Submission,
        reviewer: str = "mod",
        tier: KycTier | None = None,
        *,
        role: Role = MOD,
    ) -> Submission:
        decided = await self.review.approve(
            ApproveKyc(reviewer, role, submission.id, tier, "", key(reviewer))
        )
        self.clock.advance()
        return decided

    async def view(
        self, submission_id: str, viewer: str = "mod", *, role: Role = MOD
    ) -> SubmissionDetails:
        return await self.review.view(submission_id, viewer=StaffViewer(viewer, role))

    async def sealed_for(
        self, submission: Submission, number: str = "ABCPE1234F"
    ) -> SealedDocument:
        """`number` sealed for `submission` as SubmitKyc seals it (for rows a test stores
        directly), under the active key."""
        ref = SubmissionRef(submission.id, submission.user_id)
        dek = DataKey.generate(ref)
        return SealedDocument(
            self.hasher.digest(submission.document_type, number),
            self.cipher.wrap(dek, await self.uow.keys.active_key_id(for_write=False)),
            dek.seal(Field.DOCUMENT_NUMBER, number.encode()),
            None,
        )

    def snapshot(self) -> object:
        """Everything a command could write, to prove a refused one wrote nothing."""
        u = self.uow
        return (
            dict(u.submissions.rows),
            dict(u.submissions.secrets),
            dict(u.keys.states),
            dict(u.keys.rotations),
            dict(u.idempotency.records),
            list(u.outbox.events),
            len(u.audit_entries),
        )
