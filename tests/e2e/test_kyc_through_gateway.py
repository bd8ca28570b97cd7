"""KYC end to end, through Envoy as a web client and as gRPC clients would go: submit, the
moderator's queue, the audited view, approval raising the wallet's tier and limits with a
notification on the live watch stream; reject then resubmit; refused input (400 naming the
field, nothing written); duplicates flagged in the queue and shown to the reviewer; the
streamed upload with a Python stub and with grpcurl.

Files up to kyc's cap (10 MiB) pass the gateway inline as JSON (about 14 MiB of base64), as
native gRPC and streamed; the gateway's caps on those routes are derived from kyc's file cap
(vaultpay_gateway.kyc_file_limits), every other route keeps the 1 MiB default.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

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
    """A PDF as kyc's content check reads one (its %%EOF last, no script) of `size` bytes."""
    head, tail = b"%PDF-1.7\n" + marker + b"\n", b"\n%%EOF\n"
    return head + b"B" * (size - len(head) - len(tail)) + tail


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


def announced(gateway: Gateway, path: str, length: int, token: str) -> Reply:
    """Announces a JSON body of `length` bytes (`Expect: 100-continue`, as curl does for
    large bodies) and reads the answer before sending any of it.

    A client that writes a body over the cap without reading may see the connection reset
    instead: Envoy refuses at once and closes an HTTP/1.1 connection it will not read.
    """
    url = urlsplit(gateway.base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    headers = {
        "content-type": "application/json",
        "content-length": str(length),
        "expect": "100-continue",
        "authorization": f"Bearer {token}",
    }
    try:
        conn.putrequest("POST", path)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()  # skips the interim 100 Continue
        payload = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    return Reply(response.status, json.loads(payload) if payload.strip() else {}, got)


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


def test_misspelled_ids_are_400_naming_the_field_and_decide_nothing(
    gateway: Gateway, moderator: str
) -> None:
    """The QA's spellings: braces, bare hex, a leading space, a trailing newline (each URL
    encoded in the path) and a userId filter that is no id; answered 400 naming the field, as
    auth and wallet answer them, not a view, a decision or an empty list."""
    person = new_person(gateway)
    submitted = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert submitted.status == 200, submitted.body
    sid = submitted.body["submission"]["submissionId"]
    for spelled in ("%7B" + sid + "%7D", sid.replace("-", ""), "%20" + sid, sid + "%0A"):
        viewed = gateway.call("GET", f"/v1/admin/kyc/{spelled}", token=moderator)
        rejected = gateway.call(
            "POST",
            f"/v1/admin/kyc/{spelled}:reject",
            {"requestId": rid(), "reason": "blurred"},
            token=moderator,
        )
        for reply in (viewed, rejected):
            assert (reply.status, reply.field_violations()) == (400, ["submissionId"]), (
                spelled,
                reply.body,
            )
    for user_id in ("nope", "%7B" + person.user_id + "%7D"):
        listed = gateway.call("GET", f"/v1/admin/kyc?userId={user_id}", token=moderator)
        assert (listed.status, listed.field_violations()) == (400, ["userId"]), listed.body
    status = person.call(gateway, "GET", "/v1/kyc/status").body
    assert status["status"] == "KYC_STATUS_PENDING"


def test_a_user_without_a_wallet_is_404_wallet_not_found(gateway: Gateway) -> None:
    person = new_person(gateway, wallet=False)
    reply = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert (reply.status, reply.error_reason()) == (404, "WALLET_NOT_FOUND"), reply.body


def test_a_basic_user_submits_again_and_is_upgraded_to_full_in_wallet(
    gateway: Gateway, moderator: str
) -> None:
    person = new_person(gateway)

    def wallet_tier() -> str:
        return str(person.call(gateway, "GET", "/v1/wallets/me").body["wallet"]["kycTier"])

    def approve(sid: str, tier: str) -> Reply:
        return gateway.call(
            "POST",
            f"/v1/admin/kyc/{sid}:approve",
            {"requestId": rid(), "kycTier": tier},
            token=moderator,
        )

    first = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert approve(first.body["submission"]["submissionId"], "KYC_TIER_BASIC").status == 200
    until(lambda: wallet_tier() == "KYC_TIER_BASIC", "the wallet's tier to become BASIC")
    upgrade = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert upgrade.status == 200, upgrade.body
    status = person.call(gateway, "GET", "/v1/kyc/status").body
    assert (status["status"], status["kycTier"]) == ("KYC_STATUS_PENDING", "KYC_TIER_BASIC")
    approved = approve(upgrade.body["submission"]["submissionId"], "KYC_TIER_FULL")
    assert approved.status == 200, approved.body
    until(lambda: wallet_tier() == "KYC_TIER_FULL", "the wallet's tier to become FULL")
    again = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert (again.status, again.error_reason()) == (409, "KYC_ALREADY_SUBMITTED")


@pytest.mark.parametrize(("override", "field"), BAD_INPUT)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(
    gateway: Gateway, moderator: str, override: dict[str, Any], field: str
) -> None:
    person = new_person(gateway)
    body = {**submission_body(pan()), **override}
    reply = person.call(gateway, "POST", "/v1/kyc/submissions", body)
    assert reply.status == 400, reply.body
    # kyc names fields by proto path; the gateway gives JSON clients the JSON path.
    assert reply.field_violations() == [field], reply.body
    assert _submissions_of(gateway, moderator, person.user_id) == []


def test_a_9_mib_file_inline_as_json_comes_back_byte_identical(
    gateway: Gateway, moderator: str
) -> None:
    person = new_person(gateway)
    file = pdf(9 * MiB, b"nine mebibytes, inline JSON")
    body = submission_body(pan(), file)

    submitted = person.call(gateway, "POST", "/v1/kyc/submissions", body)

    assert submitted.status == 200, submitted.body
    sub = submitted.body["submission"]
    assert sub["documentSizeBytes"] == str(len(file))
    viewed = gateway.call("GET", f"/v1/admin/kyc/{sub['submissionId']}", token=moderator)
    assert viewed.status == 200, viewed.body
    assert viewed.headers["content-type"] == "application/json"
    assert base64.b64decode(viewed.body["documentFile"]) == file


async def test_a_file_over_the_cap_is_refused_naming_the_field_and_writes_nothing(
    gateway: Gateway, mesh: Mesh, moderator: str
) -> None:
    """Through the gateway: a file one byte over kyc's cap fits the gateway's caps (derived
    from kyc's, with room for the other fields), so kyc answers, naming the field; a body
    over the gateway's cap gets the gateway's 413 as a google.rpc.Status."""
    person = new_person(gateway)
    over = pdf(10 * MiB + 1)

    as_json = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan(), over))
    too_big = announced(gateway, "/v1/kyc/submissions", 15 * MiB, person.token)
    request = kyc_pb2.SubmitKycRequest(
        request_id=rid(),
        document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
        document_number=pan(),
        document_file=over,
        document_content_type="application/pdf",
    )
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh), options=BIG) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kyc_pb2_grpc.KycServiceStub(channel).SubmitKyc(
                request, metadata=bearer(person.token), timeout=60
            )

    assert as_json.status == 400, as_json.body
    assert as_json.field_violations() == ["documentFile"], as_json.body
    assert (too_big.status, too_big.error_reason()) == (413, "PAYLOAD_TOO_LARGE"), too_big
    assert too_big.headers["content-type"] == "application/json"
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "document_file" in (refused.value.details() or "")
    assert _submissions_of(gateway, moderator, person.user_id) == []


async def test_every_other_route_still_refuses_bodies_over_1_mib(
    gateway: Gateway, mesh: Mesh, moderator: str
) -> None:
    person = new_person(gateway)
    submitted = person.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    sid = submitted.body["submission"]["submissionId"]

    login = announced(gateway, "/v1/auth/login", MiB + 1, person.token)
    reject = announced(gateway, f"/v1/admin/kyc/{sid}:reject", MiB + 1, moderator)
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh), options=BIG) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kyc_pb2_grpc.KycAdminServiceStub(channel).AdminRejectKyc(
                kyc_pb2.AdminRejectKycRequest(
                    request_id=rid(), submission_id=sid, reason="x" * MiB
                ),
                metadata=bearer(moderator),
                timeout=30,
            )

    for reply in (login, reject):
        assert (reply.status, reply.error_reason()) == (413, "PAYLOAD_TOO_LARGE"), reply
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = person.call(gateway, "GET", "/v1/kyc/status").body
    assert status["status"] == "KYC_STATUS_PENDING"  # the refused rejection did not happen


async def test_the_same_document_from_two_users_is_flagged_and_shown_to_the_reviewer(
    gateway: Gateway, moderator: str
) -> None:
    number = pan()
    alice, bob, carol = new_person(gateway), new_person(gateway), new_person(gateway)

    def flags(person: Person) -> list[bool]:
        return [s["possibleDuplicate"] for s in _submissions_of(gateway, moderator, person.user_id)]

    first = alice.call(gateway, "POST", "/v1/kyc/submissions", submission_body(number))
    assert first.status == 200, first.body
    assert flags(alice) == [False]
    second = bob.call(gateway, "POST", "/v1/kyc/submissions", submission_body(number.lower()))
    other = carol.call(gateway, "POST", "/v1/kyc/submissions", submission_body(pan()))
    assert second.status == other.status == 200

    assert flags(bob) == [True]
    assert flags(carol) == [False]
    # Once a second user has it, the document is shared: either user may be the impostor.
    assert flags(alice) == [True]
    assert second.body["submission"]["possibleDuplicate"] is False  # never told the submitter
    viewed = gateway.call(
        "GET", f"/v1/admin/kyc/{second.body['submission']['submissionId']}", token=moderator
    )
    assert viewed.body["duplicateSubmissionIds"] == [first.body["submission"]["submissionId"]]
    assert viewed.body["submission"]["possibleDuplicate"] is True


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
    ten = pdf(10 * MiB, b"ten mebibytes, streamed through the gateway")
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh), options=BIG) as channel:
        stub = kyc_pb2_grpc.KycServiceStub(channel)
        stored = await stub.UploadKycDocument(
            _upload_messages(pan(), ten), metadata=bearer(big.token), timeout=60
        )
        # One byte over kyc's cap: the gateway lets it through, kyc refuses it.
        over_kyc = new_person(gateway)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UploadKycDocument(
                _upload_messages(pan(), ten + b"!"), metadata=bearer(over_kyc.token), timeout=60
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _submissions_of(gateway, moderator, over_kyc.user_id) == []
        admin = kyc_pb2_grpc.KycAdminServiceStub(channel)
        viewed = await admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=stored.submission.submission_id),
            metadata=bearer(moderator),
            timeout=60,
        )
    assert hashlib.sha256(viewed.document_file).digest() == hashlib.sha256(ten).digest()


def _grpcurl_upload(
    mesh: Mesh, person: Person, data: bytes, chunk: int
) -> subprocess.CompletedProcess[str]:
    """UploadKycDocument with grpcurl through the gateway: one JSON message per line."""
    messages: list[dict[str, Any]] = [
        {
            "metadata": {
                "requestId": rid(),
                "documentType": "DOCUMENT_TYPE_PAN",
                "documentNumber": pan(),
                "documentContentType": "application/pdf",
                "documentSizeBytes": str(len(data)),
                "documentSha256": hashlib.sha256(data).hexdigest(),
            }
        },
        *(
            {"chunk": base64.b64encode(data[start : start + chunk]).decode()}
            for start in range(0, len(data), chunk)
        ),
    ]
    return subprocess.run(
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


def test_the_streamed_upload_with_grpcurl_through_the_gateway(gateway: Gateway, mesh: Mesh) -> None:
    person = new_person(gateway)
    data = pdf(50_000, b"sent by grpcurl")

    result = _grpcurl_upload(mesh, person, data, chunk=len(data) // 2 + 1)

    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    assert reply["submission"]["documentSizeBytes"] == str(len(data))
    assert reply["submission"]["status"] == "KYC_STATUS_PENDING"


def test_a_stream_over_the_gateways_cap_is_cut_by_the_gateway(
    gateway: Gateway, mesh: Mesh, moderator: str
) -> None:
    """The gateway stops a stream at kyc's cap plus 64 KiB and nothing is stored. The client
    sees the stream reset rather than a status: kyc has already sent its response headers
    (every service sends the request id first), after which Envoy can only reset. Streams
    that kyc refuses within the gateway's cap get kyc's own status (the test above)."""
    person = new_person(gateway)
    log = mesh.log_dir / "envoy-access.log"
    seen = len(log.read_text().splitlines())

    result = _grpcurl_upload(mesh, person, pdf(11 * MiB), chunk=MiB)

    assert result.returncode != 0
    assert "RST_STREAM" in result.stderr or "ResourceExhausted" in result.stderr, result.stderr

    def cut_by_the_gateway() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in log.read_text().splitlines()[seen:]]
        return [
            entry
            for entry in lines
            if entry["rpc"] == "/vaultpay.kyc.v1.KycService/UploadKycDocument"
            and entry["details"] == "request_payload_too_large"
        ]

    (entry,) = until(cut_by_the_gateway, "the access log line of the cut stream")
    assert int(entry["bytes_received"]) < 10 * MiB + 64 * 1024 + MiB
    assert _submissions_of(gateway, moderator, person.user_id) == []


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
