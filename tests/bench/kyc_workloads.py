"""What the KYC bench sends: valid document numbers, files, staff, fresh submitters, the
Envoy JSON requests, and the bulk seeding of submissions for the key rotation.

* Document numbers cycle through the four types, each valid for its format (Aadhaar with its
  Verhoeff check digit) and distinct within a run, so no submission is flagged a duplicate.
* SubmitKyc allows one pending submission per user: every submission comes from a user who
  has never submitted (`FreshUsers`: registered, logged in and given a wallet before the cell,
  in batches sized from what the previous cell managed).
* Staff are made the way an operator makes them (tests/e2e/wallet_support.py's staff_token):
  `vaultpay-auth create-superadmin`, then an SQL UPDATE of the role for a moderator.
* `seed_submissions` stores many submissions quickly, in-process, through kyc's own use case
  (SubmissionService.submit: validation, a data key per submission, sealing, the active
  key-encryption key, the audit row) against the mesh's database with the mesh's kyc settings;
  only the wallet check is skipped (the seeded owners are not real users).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.bench.httpclient import HttpConnection, encode_request
from tests.bench.workloads import PASSWORD, TOKEN_MAX_AGE_S, UserPool, grpc_channel
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_common.clock import SystemClock
from vaultpay_common.db import create_engine
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.postgres import run_sql
from vaultpay_kyc.adapters.unit_of_work import SqlKycUnitOfWork
from vaultpay_kyc.domain.crypto import DocumentHasher
from vaultpay_kyc.domain.documents import DL_STATE_CODES, DocumentType, verhoeff_check_digit
from vaultpay_kyc.entrypoints.bootstrap import envelope_cipher
from vaultpay_kyc.service_layer.commands import SubmitKyc
from vaultpay_kyc.service_layer.submissions import SubmissionService
from vaultpay_kyc.settings import KycSettings

__all__ = [
    "DocumentNumbers",
    "FreshUsers",
    "KycRequests",
    "MiB",
    "OutOfUsersError",
    "SeedResult",
    "Staff",
    "aadhaar_number",
    "document_file",
    "driving_licence_number",
    "file_size_text",
    "kyc_settings",
    "make_staff",
    "pan_number",
    "passport_number",
    "seed_submissions",
]

MiB = 1024 * 1024
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_STATES = sorted(DL_STATE_CODES)
_AUTH_CLI = (sys.executable, "-m", "vaultpay_auth.entrypoints.cli")
CONTENT_TYPE = "application/pdf"


# ----- document numbers and files -----------------------------------------------------------


def _letters(n: int, count: int) -> str:
    out = []
    for _ in range(count):
        n, letter = divmod(n, 26)
        out.append(_LETTERS[letter])
    return "".join(out)


def pan_number(n: int) -> str:
    """The n-th PAN of a person (4th letter P): distinct for n < 26^5 * 10^4."""
    serial, rest = n % 10_000, n // 10_000
    letters = _letters(rest, 5)
    return f"{letters[:3]}P{letters[3]}{serial:04d}{letters[4]}"


def aadhaar_number(n: int) -> str:
    """The n-th Aadhaar number: 12 digits, the first 2-9, the last its Verhoeff check digit
    (distinct for n < 8 * 10^10)."""
    body = f"{2 + n % 8}{(n // 8) % 10**10:010d}"
    return body + verhoeff_check_digit(body)


def passport_number(n: int) -> str:
    """The n-th passport number: a letter and 7 digits (distinct for n < 26 * 10^7)."""
    return f"{_LETTERS[n % 26]}{(n // 26) % 10**7:07d}"


def driving_licence_number(n: int, *, current_year: int) -> str:
    """The n-th driving licence: state, RTO, year of issue (1990..current), 7-digit serial
    (distinct for n < 10^7)."""
    state = _STATES[n % len(_STATES)]
    rto = 1 + (n // len(_STATES)) % 99
    year = 1990 + n % max(1, current_year - 1989)
    return f"{state}{rto:02d}{year}{n % 10**7:07d}"


class DocumentNumbers:
    """Valid, distinct (type, number) pairs, the four types in turn, from a random start."""

    def __init__(self, *, start: int | None = None, current_year: int | None = None) -> None:
        self._next = itertools.count(random.randrange(10**6) if start is None else start)
        self._year = current_year or dt.datetime.now(dt.UTC).year

    def __iter__(self) -> Iterator[tuple[DocumentType, str]]:
        return self

    def __next__(self) -> tuple[DocumentType, str]:
        n = next(self._next)
        kind = n % 4
        if kind == 0:
            return DocumentType.PAN, pan_number(n)
        if kind == 1:
            return DocumentType.AADHAAR, aadhaar_number(n)
        if kind == 2:
            return DocumentType.PASSPORT, passport_number(n)
        return DocumentType.DRIVING_LICENCE, driving_licence_number(n, current_year=self._year)


def document_file(size: int) -> bytes:
    """A PDF of `size` bytes whose bulk is random bytes in one image stream (a scan does not
    compress, and neither would its ciphertext): kyc reads the whole file, and passes an image
    (DCTDecode) without decoding it."""
    head = b"%PDF-1.7\n%bench scan\n1 0 obj\n<< /Type /XObject /Subtype /Image /Width 1"
    head += b" /Height 1 /Filter /DCTDecode >>\nstream\n"
    tail = b"\nendstream\nendobj\n%%EOF\n"
    if size < len(head) + len(tail):
        raise ValueError(f"a document file needs at least {len(head) + len(tail)} bytes")
    return head + os.urandom(size - len(head) - len(tail)) + tail


def file_size_text(size: int) -> str:
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def proto_document_type(kind: DocumentType) -> str:
    return f"DOCUMENT_TYPE_{kind.value}"


# ----- staff --------------------------------------------------------------------------------


@dataclass
class Staff:
    """A staff member's login, and an access token refreshed before it expires."""

    email: str
    role: str
    auth_address: str
    token: str = ""
    issued_at: float = 0.0

    async def login(self) -> str:
        async with grpc_channel(self.auth_address) as channel:
            reply = await auth_pb2_grpc.AuthServiceStub(channel).Login(
                auth_pb2.LoginRequest(email=self.email, password=PASSWORD), timeout=60
            )
        self.token = str(reply.tokens.access_token)
        self.issued_at = time.monotonic()
        return self.token

    async def fresh_token(self) -> str:
        if not self.token or time.monotonic() - self.issued_at >= TOKEN_MAX_AGE_S:
            await self.login()
        return self.token


async def make_staff(mesh: Mesh, role: str, run_id: str) -> Staff:
    """A staff member with `role` (SUPER_ADMIN, ADMIN, MODERATOR), made as an operator does:
    the auth CLI creates a super_admin, an SQL UPDATE lowers the role; then logged in."""
    email = f"bench-{role.lower()}-{run_id}@example.com"
    env = {**os.environ, **mesh.env_for("auth", operator=True)}
    made = await asyncio.to_thread(
        subprocess.run,
        [*_AUTH_CLI, "create-superadmin", "--email", email, "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(f"create-superadmin failed: {made.stderr.strip()[-500:]}")
    if role != "SUPER_ADMIN":
        dbs = mesh.databases
        if dbs is None:
            raise RuntimeError("the mesh has no databases")

        async def demote(conn: Any) -> None:
            await conn.execute("UPDATE users SET role = $1 WHERE email = $2", role, email)

        dsn = dbs.url(dbs.auth_owner_role, dbs.auth_database, driver="postgresql")
        await asyncio.to_thread(run_sql, dsn, demote)
    staff = Staff(email, role, mesh.grpc_address("auth"))
    await staff.login()
    return staff


# ----- fresh submitters ---------------------------------------------------------------------


class OutOfUsersError(Exception):
    """The cell used every fresh user prepared for it (its throughput is then understated)."""


@dataclass
class FreshUsers:
    """Users with a wallet who have not submitted yet, each handed out once.

    Prepared in batches before a cell (`UserPool.create` + `open_wallets`: the wallet bench's
    own setup); a batch whose tokens are close to expiry logs in again first."""

    auth_address: str
    wallet_address: str
    run_id: str
    parallel: int
    created: int = 0
    _pools: list[UserPool] = field(default_factory=list)
    # (pool, user) of every user not handed out yet, oldest first.
    _ready: deque[tuple[int, int]] = field(default_factory=deque)

    @property
    def available(self) -> int:
        return len(self._ready)

    async def ensure(self, count: int) -> int:
        """At least `count` unused users, with fresh tokens; returns how many were made."""
        for index in sorted({pool for pool, _ in self._ready}):
            await self._pools[index].ensure_fresh_tokens(parallel=self.parallel)
        missing = count - len(self._ready)
        if missing <= 0:
            return 0
        batch = f"{self.run_id}-{len(self._pools)}"
        pool = await UserPool.create(self.auth_address, missing, batch, parallel=self.parallel)
        await pool.open_wallets(self.wallet_address, parallel=self.parallel)
        self._ready.extend((len(self._pools), user) for user in range(missing))
        self._pools.append(pool)
        self.created += missing
        return missing

    def take(self) -> str:
        """An unused user's access token."""
        try:
            pool, user = self._ready.popleft()
        except IndexError:
            raise OutOfUsersError("no fresh user left for SubmitKyc") from None
        return self._pools[pool].tokens[user]


# ----- the Envoy JSON requests --------------------------------------------------------------


@dataclass(frozen=True)
class KycRequests:
    """Pre-encoded HTTP/1.1 requests of the gateway's KYC routes."""

    host: str
    port: int

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def connection(self) -> HttpConnection:
        return HttpConnection(self.host, self.port)

    def _send(self, method: str, path: str, token: str, body: bytes = b"") -> bytes:
        headers = {"Authorization": f"Bearer {token}"}
        return encode_request(method, path, host=self.authority, headers=headers, body=body)

    def submit(self, token: str, kind: DocumentType, number: str, file_b64: bytes) -> bytes:
        """POST /v1/kyc/submissions with the file inline (base64, as JSON carries bytes);
        the base64 is encoded once per run and spliced in."""
        head = json.dumps(
            {
                "requestId": str(uuid.uuid4()),
                "documentType": proto_document_type(kind),
                "documentNumber": number,
                "documentContentType": CONTENT_TYPE if file_b64 else "",
            }
        ).encode()
        body = head[:-1] + (b', "documentFile": "' + file_b64 + b'"}' if file_b64 else b"}")
        return self._send("POST", "/v1/kyc/submissions", token, body)

    def get(self, token: str, submission_id: str) -> bytes:
        """GET /v1/admin/kyc/{id}: the decrypted number and file (audited)."""
        return self._send("GET", f"/v1/admin/kyc/{submission_id}", token)

    def rotate(self, token: str, request_id: str) -> bytes:
        """POST /v1/admin/kyc:rotateKey (super_admin); a retry with the same id resumes."""
        body = json.dumps({"requestId": request_id}).encode()
        return self._send("POST", "/v1/admin/kyc:rotateKey", token, body)


# ----- bulk seeding -------------------------------------------------------------------------


def kyc_settings(env: Mapping[str, str]) -> KycSettings:
    """The kyc service's settings from the variables the mesh gave its process."""
    fields: dict[str, Any] = {
        key.removeprefix("KYC_").lower(): value
        for key, value in env.items()
        if key.startswith("KYC_")
    }
    return KycSettings(**fields)


class _EveryoneHasAWallet:
    """The seeded owners are not real users: the wallet check (a GetBalance on the user's
    behalf) is the one step of SubmitKyc the seeding skips."""

    async def require_wallet(self, user_id: str) -> None:
        return None


@dataclass(frozen=True)
class SeedResult:
    count: int
    seconds: float
    file_bytes: int
    key_id: str
    by_type: dict[str, int]


async def seed_submissions(
    env: Mapping[str, str],
    count: int,
    *,
    file_bytes: int,
    parallel: int,
    progress: Callable[[int], None] | None = None,
    numbers: DocumentNumbers | None = None,
) -> SeedResult:
    """Stores `count` pending submissions through kyc's own SubmissionService, in-process,
    with the kyc settings `env` (the mesh's): real rows, each sealed under its own data key
    wrapped by the active key-encryption key, each audited."""
    settings = kyc_settings(env)
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=parallel,
        application_name="vaultpay-bench-seed",
    )
    service = SubmissionService(
        lambda: SqlKycUnitOfWork(engine),
        SystemClock(),
        _EveryoneHasAWallet(),
        envelope_cipher(settings),
        DocumentHasher(settings.document_hash_key),
        max_file_bytes=settings.document_max_bytes,
        max_chunk_bytes=settings.upload_chunk_max_bytes,
    )
    file = document_file(file_bytes) if file_bytes else b""
    numbers = numbers or DocumentNumbers()
    by_type: dict[str, int] = {}
    key_ids: set[str] = set()
    done = 0
    began = time.perf_counter()
    jobs = iter(range(count))

    async def worker() -> None:
        nonlocal done
        for _ in jobs:
            kind, number = next(numbers)
            submission = await service.submit(
                SubmitKyc(
                    str(uuid.uuid4()),
                    kind,
                    number,
                    file,
                    CONTENT_TYPE if file else "",
                    None,
                )
            )
            by_type[kind.value] = by_type.get(kind.value, 0) + 1
            key_ids.add(submission.key_id)
            done += 1
            if progress is not None:
                progress(done)

    try:
        await asyncio.gather(*(worker() for _ in range(parallel)))
    finally:
        await engine.dispose()
    seconds = time.perf_counter() - began
    return SeedResult(count, seconds, file_bytes, ",".join(sorted(key_ids)), by_type)
