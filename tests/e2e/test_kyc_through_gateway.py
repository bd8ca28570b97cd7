"""KYC end to end, through Envoy as a web client and as gRPC clients would go: submit, the
moderator's queue, the audited view, approval raising the wallet's tier and limits with a
notification on the live watch stream; reject then resubmit; refused input (400 naming the
field, nothing written); duplicates shown to the reviewer; the streamed upload with a Python
stub and with grpcurl.

Inline files through the gateway stay under today's default body cap (1 MiB of JSON); the
10 MiB files go over native gRPC straight to kyc (the per-route gateway cap is the gateway's
to raise, see the README).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from tests.e2e.conftest import GRPCURL, Gateway, Reply
from tests.e2e.wallet_support import (
    Person,
    bearer,
    gateway_grpc_address,
    new_person,
    rid,
    staff_token,
)
from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_devstack.mesh import Mesh
from vaultpay_kyc.domain.documents import verhoeff_check_digit

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
PATIENCE_S = 20.0
BIG = [("grpc.max_send_message_length", 32 * MiB), ("grpc.max_receive_message_length", 32 * MiB)]


def pan() -> str:
    n = uuid.uuid4().int
    letters = "".join(chr(65 + (n >> (5 * i)) % 26) for i in range(4))
    return f"{letters[:3]}P{letters[3]}{n % 10_000:04d}Z"


def pdf(size: int, marker: bytes = b"") -> bytes:
    head = b"%PDF-1.7\n" + marker + b"\n"
    return head + b"B" * (size - len(head))


def submission_body(number: str, file: bytes = b"", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestId": rid(),
        "documentType": "DOCUMENT_TYPE_PAN",
        "documentNumber": number,
        **extra,
    }
    if file:
        body["documentFile"] = base64.b64encode(file).decode()
        body["documentContentType"] = "application/pdf"
    return body


def until(condition: Callable[[], Any], what: str, within: float = PATIENCE_S) -> Any:
    """Polls `condition()` with a deadline (never a fixed sleep); returns its truthy value."""
    deadline = time.monotonic() + within
    delay = 0.05
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


@pytest.fixture(scope="module")
def moderator(mesh: Mesh, gateway: Gateway) -> str:
    return staff_token(mesh, gateway, "MODERATOR")


@pytest.fixture(scope="module")
def admin(mesh: Mesh, gateway: Gateway) -> str:
    return staff_token(mesh, gateway, "ADMIN")


def _submissions_of(gateway: Gateway, token: str, user_id: str) -> list[dict[str, Any]]:
    reply = gateway.call("GET", f"/v1/admin/kyc?userId={user_id}", token=token)
    assert reply.status == 200, reply.body
    found: list[dict[str, Any]] = reply.body.get("submissions", [])
    return found


def _send_limit(gateway: Gateway, person: Person) -> int:
    limits = person.call(gateway, "GET", "/v1/wallets/me/limits").body["limits"]
    send = next(a for a in limits if a["action"] == "LIMIT_ACTION_SEND")
    return int(send["daily"]["amount"].get("amountMinor", "0"))


async def test_submit_review_approve_raises_tier_and_limits_and_notifies_live(
    gateway: Gateway, mesh: Mesh, moderator: str, admin: str
) -> None:
    person = new_person(gateway)
    limit_before = _send_limit(gateway, person)
    number = pan()
    file = pdf(300_000, b"PAN card scan, front")
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        watch = wallet_pb2_grpc.WalletServiceStub(channel).WatchNotifications(
            wallet_pb2.WatchNotificationsRequest(), metadata=bearer(person.token)
        )
        first = await asyncio.wait_for(watch.read(), PATIENCE_S)  # the badge count: stream open
        assert not first.HasField("notification")

        submitted = person.call(
            gateway, "POST", "/v1/kyc/submissions", submission_body(number, file)
        )
        assert submitted.status == 200, submitted.body
        sub = submitted.body["submission"]
        assert sub["status"] == "KYC_STATUS_PENDING"
        assert sub["maskedDocumentNumber"] == "XXXXXX" + number[-4:]
        assert sub["documentSizeBytes"] == str(len(file))
        status = person.call(gateway, "GET", "/v1/kyc/status")
        assert status.body["status"] == "KYC_STATUS_PENDING", status.body

        queue = gateway.call(
            "GET", "/v1/admin/kyc?status=KYC_STATUS_PENDING&pageSize=100", token=moderator
        )
        assert queue.status == 200, queue.body
        assert sub["submissionId"] in [s["submissionId"] for s in queue.body["submissions"]]
        viewed = gateway.call("GET", f"/v1/admin/kyc/{sub['submissionId']}", token=moderator)
        assert viewed.status == 200, viewed.body
        assert viewed.body["documentNumber"] == number
        assert base64.b64decode(viewed.body["documentFile"]) == file

        audit = gateway.call(
            "GET",
            f"/v1/admin/audit-logs?action=kyc.submission_viewed&targetId={sub['submissionId']}",
            token=admin,
        )
        assert audit.status == 200, audit.body
        (event,) = audit.body["events"]
        assert event["details"]["user_id"] == person.user_id
        assert number not in json.dumps(audit.body)

        approved = gateway.call(
            "POST",
            f"/v1/admin/kyc/{sub['submissionId']}:approve",
            {"requestId": rid(), "note": "clear scan"},
            token=moderator,
        )
        assert approved.status == 200, approved.body
        assert approved.body["submission"]["grantedKycTier"] == "KYC_TIER_FULL"

        async def kyc_note() -> wallet_pb2.WatchNotificationsResponse:
            while True:
                message: wallet_pb2.WatchNotificationsResponse = await watch.read()
                if message.HasField("notification"):
                    return message

        note = await asyncio.wait_for(kyc_note(), PATIENCE_S)
        watch.cancel()
    assert note.notification.kind == wallet_pb2.NOTIFICATION_KIND_KYC
    assert number[-4:] in note.notification.body and number not in note.notification.body

    def tier() -> bool:
        wallet = person.call(gateway, "GET", "/v1/wallets/me").body["wallet"]
        return bool(wallet["kycTier"] == "KYC_TIER_FULL")

    until(tier, "the wallet's tier to become FULL")
    assert _send_limit(gateway, person) > limit_before
    status = person.call(gateway, "GET", "/v1/kyc/status").body
    assert (status["status"], status["kycTier"]) == ("KYC_STATUS_VERIFIED", "KYC_TIER_FULL")


def test_a_rejected_user_sees_the_reason_and_submits_again(
    gateway: Gateway, moderator: str
) -> None:
    person = new_person(gateway)
    first = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert first.status == 200, first.body
    again = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert (again.status, again.error_reason()) == (409, "KYC_ALREADY_SUBMITTED")
    sid = first.body["submission"]["submissionId"]
    no_reason = gateway.call(
        "POST", f"/v1/admin/kyc/{sid}:reject", {"requestId": rid()}, token=moderator
    )
    assert (no_reason.status, no_reason.field_violations()) == (400, ["reason"])
    rejected = gateway.call(
        "POST",
        f"/v1/admin/kyc/{sid}:reject",
        {"requestId": rid(), "reason": "the photo is blurred"},
        token=moderator,
    )
    assert rejected.status == 200, rejected.body
    status = person.call(gateway, "GET", "/v1/kyc/status").body
    assert status["status"] == "KYC_STATUS_REJECTED"
    assert status["rejectionReason"] == "the photo is blurred"

    def notified() -> bool:
        notes = person.call(gateway, "GET", "/v1/notifications").body.get("notifications", [])
        return any(n["kind"] == "NOTIFICATION_KIND_KYC" for n in notes)

    until(notified, "the rejection notification")
    resubmitted = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert resubmitted.status == 200, resubmitted.body


def _aadhaar(valid: bool) -> str:
    body = "98765432101"
    digit = verhoeff_check_digit(body)
    return body + (digit if valid else str((int(digit) + 1) % 10))


BAD_INPUT = [
    ({"documentNumber": "ABCPE123"}, "documentNumber"),
    (
        {"documentType": "DOCUMENT_TYPE_AADHAAR", "documentNumber": _aadhaar(False)},
        "documentNumber",
    ),
    ({"documentType": "DOCUMENT_TYPE_AADHAAR", "documentNumber": "123412341234"}, "documentNumber"),
    ({"documentType": "DOCUMENT_TYPE_PASSPORT", "documentNumber": "K12345"}, "documentNumber"),
    (
        {"documentType": "DOCUMENT_TYPE_DRIVING_LICENCE", "documentNumber": "ZZ1420110062821"},
        "documentNumber",
    ),
    (
        {
            "documentFile": base64.b64encode(b"just text, saved as scan.pdf").decode(),
            "documentContentType": "application/pdf",
        },
        "documentFile",
    ),
    ({"isVerified": True}, "isVerified"),
]


@pytest.mark.parametrize(("override", "field"), BAD_INPUT)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(
    gateway: Gateway, moderator: str, override: dict[str, Any], field: str
) -> None:
    person = new_person(gateway)
    body = {**submission_body(pan()), **override}
    reply = person.call(gateway, "POST", "/v1/kyc/submissions", body)
    assert reply.status == 400, reply.body
    assert [_camel(v) for v in reply.field_violations()] == [field], reply.body
    assert _submissions_of(gateway, moderator, person.user_id) == []


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def test_a_file_over_the_cap_is_refused_and_writes_nothing(
    gateway: Gateway, mesh: Mesh, moderator: str
) -> None:
    """Over native gRPC straight to kyc: the gateway's default body cap (1 MiB) would answer
    before kyc could for a body this size (the per-route cap is the gateway's to raise)."""
    person = new_person(gateway)
    request = kyc_pb2.SubmitKycRequest(
        request_id=rid(),
        document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
        document_number=pan(),
        document_file=pdf(10 * MiB + 1),
        document_content_type="application/pdf",
    )
    async with grpc.aio.insecure_channel(mesh.grpc_address("kyc"), options=BIG) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kyc_pb2_grpc.KycServiceStub(channel).SubmitKyc(
                request, metadata=bearer(person.token), timeout=60
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "document_file" in (refused.value.details() or "")
    assert _submissions_of(gateway, moderator, person.user_id) == []


async def test_the_same_document_from_two_users_is_shown_to_the_reviewer(
    gateway: Gateway, moderator: str
) -> None:
    number = pan()
    first = new_person(gateway).call(
        gateway, "POST", "/v1/kyc/submissions", submission_body(number)
    )
    second = new_person(gateway).call(
        gateway, "POST", "/v1/kyc/submissions", submission_body(number.lower())
    )
    assert first.status == second.status == 200
    viewed = gateway.call(
        "GET", f"/v1/admin/kyc/{second.body['submission']['submissionId']}", token=moderator
    )
    assert viewed.body["duplicateSubmissionIds"] == [first.body["submission"]["submissionId"]]


def _upload_messages(
    number: str, data: bytes, chunk: int = MiB
) -> Iterator[kyc_pb2.UploadKycDocumentRequest]:
    yield kyc_pb2.UploadKycDocumentRequest(
        metadata=kyc_pb2.UploadKycDocumentMetadata(
            request_id=rid(),
            document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
            document_number=number,
            document_content_type="application/pdf",
            document_size_bytes=len(data),
            document_sha256=hashlib.sha256(data).hexdigest(),
        )
    )
    for start in range(0, len(data), chunk):
        yield kyc_pb2.UploadKycDocumentRequest(chunk=data[start : start + chunk])


async def test_the_streamed_upload_with_a_python_stub(
    gateway: Gateway, mesh: Mesh, moderator: str
) -> None:
    small = new_person(gateway)
    data = pdf(200_000, b"through the gateway")
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        stub = kyc_pb2_grpc.KycServiceStub(channel)
        reply = await stub.UploadKycDocument(
            _upload_messages(pan(), data, chunk=64 * 1024), metadata=bearer(small.token), timeout=30
        )
    assert reply.submission.document_size_bytes == len(data)

    big = new_person(gateway)
    ten = pdf(10 * MiB, b"ten mebibytes, native gRPC")
    async with grpc.aio.insecure_channel(mesh.grpc_address("kyc"), options=BIG) as channel:
        stub = kyc_pb2_grpc.KycServiceStub(channel)
        stored = await stub.UploadKycDocument(
            _upload_messages(pan(), ten), metadata=bearer(big.token), timeout=60
        )
        over = stub.UploadKycDocument(
            _upload_messages(pan(), ten + b"!"), metadata=bearer(new_person(gateway).token)
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await over
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        admin = kyc_pb2_grpc.KycAdminServiceStub(channel)
        viewed = await admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=stored.submission.submission_id),
            metadata=bearer(moderator),
            timeout=60,
        )
    assert hashlib.sha256(viewed.document_file).digest() == hashlib.sha256(ten).digest()


def test_the_streamed_upload_with_grpcurl_through_the_gateway(gateway: Gateway, mesh: Mesh) -> None:
    person = new_person(gateway)
    data = pdf(50_000, b"sent by grpcurl")
    digest = hashlib.sha256(data).hexdigest()
    half = len(data) // 2
    messages = [
        {
            "metadata": {
                "requestId": rid(),
                "documentType": "DOCUMENT_TYPE_PAN",
                "documentNumber": pan(),
                "documentContentType": "application/pdf",
                "documentSizeBytes": str(len(data)),
                "documentSha256": digest,
            }
        },
        {"chunk": base64.b64encode(data[:half]).decode()},
        {"chunk": base64.b64encode(data[half:]).decode()},
    ]
    result = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-H",
            f"authorization: Bearer {person.token}",
            "-d",
            "@",
            gateway_grpc_address(mesh),
            "vaultpay.kyc.v1.KycService/UploadKycDocument",
        ],
        input="\n".join(json.dumps(m) for m in messages),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    assert reply["submission"]["documentSizeBytes"] == str(len(data))
    assert reply["submission"]["status"] == "KYC_STATUS_PENDING"


def test_a_user_cannot_reach_the_review_queue(gateway: Gateway) -> None:
    person = new_person(gateway)
    reply: Reply = person.call(gateway, "GET", "/v1/admin/kyc")
    assert reply.status == 403, reply.body


def test_wallets_system_stats_count_the_pending_submissions_from_kyc(
    gateway: Gateway, mesh: Mesh
) -> None:
    person = new_person(gateway)
    assert person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan())).status == 200
    root = staff_token(mesh, gateway, "SUPER_ADMIN")
    reply = gateway.call("GET", "/v1/admin/stats", token=root)
    assert reply.status == 200, reply.body
    stats = reply.body["stats"]
    assert "kyc" not in stats.get("unavailableSources", [])
    assert int(stats["pendingKycCount"]) >= 1
