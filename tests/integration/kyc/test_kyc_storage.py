"""What the database holds and how keys move: no plaintext in a dump, a ciphertext moved to
another row fails clearly, the app role's grants, and key rotation while reads and
submissions continue (RPC, retry, resume, the operator's CLI)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.integration.kyc.conftest import KycStack
from tests.integration.kyc.kyc_support import aadhaar, pan, pdf, rid, submit_request
from tests.support import rpc_failure
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.clock import SystemClock
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine
from vaultpay_devstack.postgres import find_pg_bindir
from vaultpay_kyc.adapters.unit_of_work import SqlKycUnitOfWork
from vaultpay_kyc.entrypoints.bootstrap import build_rotation
from vaultpay_kyc.service_layer.commands import RotateKycKey

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def owner(kyc: KycStack) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(kyc.dbs.vaultpay_owner_dsn, application_name="kyc-owner-test")
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def app(kyc: KycStack) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(kyc.dbs.app_dsn("kyc"), pool_size=4, application_name="kyc-app-test")
    yield engine
    await engine.dispose()


async def _submit(kyc: KycStack, number: str, file: bytes = b"") -> str:
    _, user = kyc.user()
    reply = await kyc.public.SubmitKyc(submit_request(number, file), metadata=user)
    return str(reply.submission.submission_id)


async def _view(
    kyc: KycStack, submission_id: str, role: Role = Role.MODERATOR
) -> kyc_pb2.AdminGetKycSubmissionResponse:
    _, staff = kyc.staff(role)
    reply: kyc_pb2.AdminGetKycSubmissionResponse = await kyc.admin.AdminGetKycSubmission(
        kyc_pb2.AdminGetKycSubmissionRequest(submission_id=submission_id), metadata=staff
    )
    return reply


async def _rotation_started(app: AsyncEngine, key_id: str) -> tuple[str, dict[str, str]]:
    """The actor and details of the audit row that started the rotation to `key_id`."""
    async with app.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT actor_id, details::text AS details FROM audit_events"
                    " WHERE action = 'kyc.key_rotation_started' AND target_id = :key"
                ),
                {"key": key_id},
            )
        ).one()
    return row.actor_id, json.loads(row.details)


async def _started_by(app: AsyncEngine, key_id: str) -> str:
    """`kyc_key_rotations.started_by` of the rotation to `key_id`."""
    async with app.connect() as conn:
        return str(
            (
                await conn.execute(
                    text("SELECT started_by FROM kyc_key_rotations WHERE to_key_id = :key"),
                    {"key": key_id},
                )
            ).scalar_one()
        )


@asynccontextmanager
async def _unguarded(conn: AsyncConnection) -> AsyncIterator[None]:
    """k0006's guard off inside the owner's transaction `conn` only (ALTER TABLE holds the
    table's exclusive lock until it commits): a sealed number moved to another row stands for
    tampering below the database's rules (a superuser, a restored dump), which the guard
    would otherwise refuse."""
    await conn.execute(
        text("ALTER TABLE kyc_submissions DISABLE TRIGGER kyc_submissions_change_guard")
    )
    yield
    await conn.execute(
        text("ALTER TABLE kyc_submissions ENABLE TRIGGER kyc_submissions_change_guard")
    )


def marker_of(viewed: kyc_pb2.AdminGetKycSubmissionResponse) -> bytes:
    """The marker line `pdf()` put after the PDF header."""
    return bytes(viewed.document_file.split(b"\n")[1])


async def test_a_dump_of_the_database_holds_no_number_and_no_file_content(
    kyc: KycStack,
) -> None:
    number = aadhaar()
    marker = f"KNOWN-FILE-TEXT-{uuid.uuid4().hex}".encode()
    _, user = kyc.user()
    reply = await kyc.public.SubmitKyc(
        kyc_pb2.SubmitKycRequest(
            request_id=rid(),
            document_type=kyc_pb2.DOCUMENT_TYPE_AADHAAR,
            document_number=f"{number[:4]} {number[4:8]} {number[8:]}",
            document_file=pdf(20_000, marker),
            document_content_type="application/pdf",
        ),
        metadata=user,
    )
    submission_id = reply.submission.submission_id
    # Decrypts, so the plaintext did exist (an admin's view: a moderator's masks an Aadhaar).
    viewed = await _view(kyc, submission_id, Role.ADMIN)
    assert viewed.document_number == number and marker in viewed.document_file
    dbs = kyc.dbs
    dump = subprocess.run(
        [
            str(find_pg_bindir() / "pg_dump"),
            "--data-only",
            "--dbname",
            dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql"),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert submission_id.encode() in dump  # the dump does hold the row
    for secret in (number.encode(), marker, marker.hex().encode(), number[:8].encode()):
        assert secret not in dump
    assert ("XXXXXXXX" + number[-4:]).encode() in dump  # only the mask is in clear


async def test_a_ciphertext_moved_to_another_row_fails_clearly(
    kyc: KycStack, owner: AsyncEngine
) -> None:
    victim = await _submit(kyc, pan(), pdf(5000, b"victim"))
    thief = await _submit(kyc, pan(), pdf(5000, b"thief"))
    columns = "wrapped_key, key_id, sealed_number"
    async with owner.begin() as conn, _unguarded(conn):
        original = (
            await conn.execute(
                text(f"SELECT {columns} FROM kyc_submissions WHERE id = :id"), {"id": thief}
            )
        ).one()
        await conn.execute(
            text(
                "UPDATE kyc_submissions SET sealed_number ="
                " (SELECT sealed_number FROM kyc_submissions WHERE id = :victim) WHERE id = :thief"
            ),
            {"victim": victim, "thief": thief},
        )
    failure = await rpc_failure(
        kyc.admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=thief), metadata=kyc.staff()[1]
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "KYC_DOCUMENT_UNREADABLE",
    )
    assert f"document_number of submission {thief}" in failure.message
    # the whole envelope: data key, number and file
    async with owner.begin() as conn, _unguarded(conn):
        await conn.execute(
            text(
                "UPDATE kyc_submissions t SET wrapped_key = v.wrapped_key, key_id = v.key_id,"
                " sealed_number = v.sealed_number FROM kyc_submissions v"
                " WHERE v.id = :victim AND t.id = :thief"
            ),
            {"victim": victim, "thief": thief},
        )
    failure = await rpc_failure(
        kyc.admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=thief), metadata=kyc.staff()[1]
        )
    )
    assert failure.reason == "KYC_DOCUMENT_UNREADABLE"
    assert "does not unwrap" in failure.message
    assert (await _view(kyc, victim)).document_number  # the original row still reads
    # put the thief's own envelope back: it reads again
    async with owner.begin() as conn, _unguarded(conn):
        await conn.execute(
            text(
                "UPDATE kyc_submissions SET wrapped_key = :w, key_id = :k, sealed_number = :n"
                " WHERE id = :id"
            ),
            {
                "w": original.wrapped_key,
                "k": original.key_id,
                "n": original.sealed_number,
                "id": thief,
            },
        )
    assert marker_of(await _view(kyc, thief)) == b"thief"


async def test_the_app_role_cannot_delete_submissions_or_rewrite_sealed_files(
    kyc: KycStack, app: AsyncEngine
) -> None:
    submission_id = await _submit(kyc, pan(), pdf(1000))
    for statement in (
        "DELETE FROM kyc_submissions WHERE id = :id",
        "UPDATE kyc_documents SET sealed_file = '\\x00' WHERE submission_id = :id",
        "DELETE FROM kyc_documents WHERE submission_id = :id",
    ):
        with pytest.raises(DBAPIError, match="permission denied"):
            async with app.begin() as conn:
                await conn.execute(text(statement), {"id": submission_id})


async def _keys(engine: AsyncEngine) -> tuple[dict[str, str], dict[str, int]]:
    """The key states, and how many submissions each key wraps."""
    async with engine.connect() as conn:
        states = await conn.execute(text("SELECT key_id, state FROM kyc_keys"))
        used = await conn.execute(
            text("SELECT key_id, count(*) AS n FROM kyc_submissions GROUP BY key_id")
        )
        return (
            {str(row.key_id): str(row.state) for row in states},
            {str(row.key_id): int(row.n) for row in used},
        )


async def test_rotation_during_concurrent_reads_and_submissions_loses_nothing(
    kyc: KycStack, app: AsyncEngine
) -> None:
    files = {await _submit(kyc, pan(), pdf(2000 + i, f"file {i}".encode())): i for i in range(40)}
    expected = {sid: pdf(2000 + i, f"file {i}".encode()) for sid, i in files.items()}
    root_id, root = kyc.staff(Role.SUPER_ADMIN)
    stop = asyncio.Event()
    failures: list[BaseException] = []
    read_count = 0
    submitted: list[str] = []

    async def reader(offset: int) -> None:
        nonlocal read_count
        ids = list(expected)
        i = offset
        while not stop.is_set():
            sid = ids[i % len(ids)]
            try:
                viewed = await _view(kyc, sid)
                assert viewed.document_file == expected[sid]
                read_count += 1
            except BaseException as exc:
                failures.append(exc)
            i += 7

    async def submitter() -> None:
        while not stop.is_set():
            try:
                submitted.append(await _submit(kyc, pan(), pdf(1500, b"during rotation")))
            except BaseException as exc:
                failures.append(exc)

    workers = [asyncio.create_task(reader(n)) for n in range(3)] + [
        asyncio.create_task(submitter()) for _ in range(2)
    ]
    request = kyc_pb2.AdminRotateKycKeyRequest(request_id=rid())
    try:
        rotated = await kyc.admin.AdminRotateKycKey(request, metadata=root, timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []
    assert read_count > 0 and submitted
    assert rotated.key_id != rotated.previous_key_id
    assert rotated.reencrypted_count >= 40
    states, used = await _keys(app)
    assert states == {rotated.key_id: "ACTIVE"}  # the old key was dropped: nothing uses it
    assert set(used) == {rotated.key_id}
    for sid, data in expected.items():
        assert (await _view(kyc, sid)).document_file == data
    replay = await kyc.admin.AdminRotateKycKey(request, metadata=root)
    assert (replay.key_id, replay.previous_key_id) == (rotated.key_id, rotated.previous_key_id)
    assert (await _keys(app))[0] == {rotated.key_id: "ACTIVE"}  # not rotated twice
    # The caller's address, as every staff row has (security review of 2026-12-04, night).
    actor, details = await _rotation_started(app, rotated.key_id)
    assert details["ip"] == "127.0.0.1" and "via" not in details
    # Who asked (review of kyc, item 4: the RPC recorded started_by = '').
    assert actor == root_id
    assert await _started_by(app, rotated.key_id) == root_id


async def test_an_interrupted_rotation_resumes_and_the_cli_rotates_with_progress(
    kyc: KycStack, app: AsyncEngine
) -> None:
    for _ in range(10):
        await _submit(kyc, pan(), pdf(1200))
    rotation = build_rotation(kyc.settings, app, SystemClock())
    async with SqlKycUnitOfWork(app) as uow:
        started = await rotation._start(uow, RotateKycKey(None, "test"))
        await uow.commit()
    # One batch, then the process "dies": the old key is still in use.
    await rotation._sweep_batch(started.rotation_id, set())
    states, used = await _keys(app)
    assert states[started.previous_key_id] == "RETIRING" and used[started.previous_key_id] > 0
    late = await _submit(kyc, pan())  # new writes already use the new key
    assert (await _view(kyc, late)).submission.submission_id == late
    outcome = await rotation.resume_unfinished()
    assert outcome is not None and outcome.finished
    states, used = await _keys(app)
    assert states == {started.key_id: "ACTIVE"} and set(used) == {started.key_id}

    request_id = rid()
    result = await asyncio.to_thread(kyc.cli, "rotate-key", "--request-id", request_id)
    assert result.returncode == 0, result.stderr
    assert f"request id {request_id}" in result.stdout
    assert "re-wrapped" in result.stdout and "left" in result.stdout
    # The final state once: the empty sweep after the last batch repeated it (QA: printed twice).
    progress = [line for line in result.stdout.splitlines() if line.startswith("re-wrapped")]
    assert progress[-1].endswith(", 0 left") and len(progress) == len(set(progress))
    new_states, new_used = await _keys(app)
    (new_key,) = new_states
    assert new_key != started.key_id and set(new_used) == {new_key}
    assert f"active key {new_key} (was {started.key_id})" in result.stdout
    actor, details = await _rotation_started(app, new_key)  # no client address: the CLI
    assert actor.startswith("operator:") and details["via"] == "cli" and "ip" not in details
    assert await _started_by(app, new_key) == actor  # the CLI's operator, as before
    again = await asyncio.to_thread(kyc.cli, "rotate-key", "--request-id", request_id)
    assert again.returncode == 0, again.stderr
    assert (await _keys(app))[0] == {new_key: "ACTIVE"}  # the same request id: no new key
    nothing = await asyncio.to_thread(kyc.cli, "rotate-key", "--resume")
    assert "no unfinished rotation" in nothing.stdout


class _Behind:
    """A host whose clock is an hour behind."""

    def now(self) -> datetime:
        return datetime.now(UTC) - timedelta(hours=1)


async def test_rotations_are_ordered_as_they_took_the_lock_whatever_their_hosts_clocks(
    kyc: KycStack, app: AsyncEngine
) -> None:
    """Rotation B (a host with a right clock) activates, then A (a host an hour behind):
    A's start read earlier than B's, so finishing through A's key marked only A, and B stayed
    unfinished for good (KYC_KEY_ROTATION_INCOMPLETE on every retry; KYC review, 2026-12-04
    night). Each is recorded just after the one before it, and A's finish ends both."""
    await _submit(kyc, pan())
    b = build_rotation(kyc.settings, app, SystemClock())
    a = build_rotation(kyc.settings, app, _Behind())
    starts = []
    for rotation, who in ((b, "b"), (a, "a")):
        async with SqlKycUnitOfWork(app) as uow:
            starts.append(await rotation._start(uow, RotateKycKey(None, who)))
            await uow.commit()
    assert starts[1].started_at > starts[0].started_at
    outcome = await a.complete(starts[1].rotation_id)
    assert outcome.finished
    async with app.connect() as conn:
        unfinished = await conn.scalar(
            text("SELECT count(*) FROM kyc_key_rotations WHERE finished_at IS NULL")
        )
    assert unfinished == 0


async def test_the_clis_request_id_never_starts_a_rotation_over_an_unfinished_one(
    kyc: KycStack, app: AsyncEngine
) -> None:
    """Review of 2026-12-05 (helper 289): `rotate-key --request-id` with the id of a rotation
    started through the API (keyed under its staff member, not the CLI) or a typo found no
    record of its own and started another rotation: a new key, every row re-wrapped again."""
    await _submit(kyc, pan())
    rotation = build_rotation(kyc.settings, app, SystemClock())
    async with SqlKycUnitOfWork(app) as uow:
        started = await rotation._start(uow, RotateKycKey(None, "an admin, through the API"))
        await uow.commit()
    before = await _keys(app)

    refused = await asyncio.to_thread(kyc.cli, "rotate-key", "--request-id", rid())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "rotate-key --resume" in refused.stderr
    assert await _keys(app) == before  # no new key, nothing re-wrapped

    resumed = await asyncio.to_thread(kyc.cli, "rotate-key", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    states, _ = await _keys(app)
    assert states == {started.key_id: "ACTIVE"}
