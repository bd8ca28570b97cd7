"""Per-RPC body caps through a real Envoy, with the default settings' caps (derived from kyc's
10 MiB file cap) and a kyc double that takes any size: every refusal here is the gateway's."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import (
    GatewayUnderTest,
    Reply,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.kyc_double import ThreadedKycDouble
from tests.gateway.test_gateway_json import JSON, assert_gateway_error, bearer
from tests.gateway.test_gateway_json_body import assert_unknown_fields
from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc
from vaultpay_gateway import KYC_DOCUMENT_MAX_BYTES, HostPort, MiB, kyc_file_limits

SUBMIT = "/v1/kyc/submissions"
SUBMIT_LIMITS = kyc_file_limits()["vaultpay.kyc.v1.KycService.SubmitKyc"]
assert SUBMIT_LIMITS.json_request_bytes is not None
assert SUBMIT_LIMITS.grpc_request_bytes is not None
JSON_CAP: int = SUBMIT_LIMITS.json_request_bytes
GRPC_CAP: int = SUBMIT_LIMITS.grpc_request_bytes
DEFAULT_CAP = MiB
BIG = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]


@pytest.fixture(scope="module")
def kyc_double() -> Iterator[ThreadedKycDouble]:
    double = ThreadedKycDouble()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture(scope="module")
def capped_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    kyc_double: ThreadedKycDouble,
    signing_key: SigningKey,
) -> Iterator[GatewayUnderTest]:
    workdir = tmp_path_factory.mktemp("gateway-body-limits")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {
            "auth": HostPort("127.0.0.1", auth_double.port),
            "kyc": HostPort("127.0.0.1", kyc_double.port),
        },
    )
    running = start_gateway(workdir, settings)
    try:
        running.wait_until_token_accepted(signing_key.token())
        yield running
    finally:
        running.stop()


@pytest.fixture
def token(signing_key: SigningKey) -> dict[str, str]:
    return bearer(signing_key.token(role="ROLE_MODERATOR"))


def pdf(size: int) -> bytes:
    head = b"%PDF-1.7\n"
    return (
        head + bytes(range(256)) * ((size - len(head)) // 256) + b"B" * ((size - len(head)) % 256)
    )


def submission(data: bytes, **extra: Any) -> str:
    return json.dumps(
        {
            "requestId": "r-1",
            "documentType": "DOCUMENT_TYPE_PAN",
            "documentNumber": "ABCPE1234F",
            "documentFile": base64.b64encode(data).decode(),
            "documentContentType": "application/pdf",
            **extra,
        }
    )


def announced(gateway: GatewayUnderTest, path: str, length: int, headers: dict[str, str]) -> Reply:
    """Announces a body of `length` bytes (`Expect: 100-continue`, as curl does for large
    bodies) and waits for the answer before sending it; a refusal comes back whole.

    A client that writes a body over the cap without reading first may instead see the
    connection reset: Envoy answers 413 at once and closes an HTTP/1.1 connection whose
    request it will not read.
    """
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    sent = {**JSON, **headers, "content-length": str(length), "expect": "100-continue"}
    try:
        conn.putrequest("POST", path)
        for key, value in sent.items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()  # skips the interim 100 Continue
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


# --- JSON ---


def test_the_caps_are_derived_from_kycs_file_cap() -> None:
    assert 10 * MiB == KYC_DOCUMENT_MAX_BYTES
    assert 14 * MiB == JSON_CAP
    assert 10 * MiB + 64 * 1024 == GRPC_CAP


def test_a_json_submission_with_a_file_of_the_kyc_cap_reaches_kyc_whole(
    capped_gateway: GatewayUnderTest, kyc_double: ThreadedKycDouble, token: dict[str, str]
) -> None:
    data = pdf(KYC_DOCUMENT_MAX_BYTES)
    body = submission(data)
    assert DEFAULT_CAP < len(body) <= JSON_CAP

    reply = capped_gateway.call("POST", SUBMIT, body, {**JSON, **token})

    assert reply.status == 200, reply.body[:500]
    sid = reply.json()["submission"]["submissionId"]
    assert kyc_double.servicer.files[sid] == data


def test_a_json_body_over_the_raised_cap_is_413_status_json_before_it_is_sent(
    capped_gateway: GatewayUnderTest, kyc_double: ThreadedKycDouble, token: dict[str, str]
) -> None:
    calls_before = kyc_double.servicer.calls

    over = announced(capped_gateway, SUBMIT, JSON_CAP + 1, token)

    assert_gateway_error(over, 413, 8, "PAYLOAD_TOO_LARGE")
    assert kyc_double.servicer.calls == calls_before


def test_a_bad_token_is_refused_before_a_kyc_body_is_read(
    capped_gateway: GatewayUnderTest, kyc_double: ThreadedKycDouble
) -> None:
    """Any Authorization header opens the 14 MiB route, whose body is buffered whole before
    the transcoder and jwt_authn: a junk token is now refused at the headers (review of
    2026-12-04), not after Envoy held a body that trickled in. The body is never sent here:
    the answer comes first, or the call times out."""
    calls_before = kyc_double.servicer.calls

    refused = announced(capped_gateway, SUBMIT, JSON_CAP - 1, {"authorization": "Bearer junk"})

    assert_gateway_error(refused, 401, 16, "TOKEN_INVALID")
    assert kyc_double.servicer.calls == calls_before


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_the_kyc_file_route_takes_the_bearer_scheme_in_any_case(
    capped_gateway: GatewayUnderTest,
    kyc_double: ThreadedKycDouble,
    signing_key: SigningKey,
    scheme: str,
) -> None:
    """The route's early token check (before the body) ran before the filter that spells the
    scheme `Bearer`, and refused `bearer` 401 on this route alone (review of 2026-12-05)."""
    calls_before = kyc_double.servicer.calls
    headers = {**JSON, "authorization": f"{scheme} {signing_key.token()}"}

    reply = capped_gateway.call("POST", SUBMIT, submission(pdf(4096)), headers)

    assert reply.status == 200, reply.body[:500]
    assert kyc_double.servicer.calls == calls_before + 1


def test_unknown_fields_are_refused_in_a_body_of_the_raised_cap(
    capped_gateway: GatewayUnderTest, kyc_double: ThreadedKycDouble, token: dict[str, str]
) -> None:
    calls_before = kyc_double.servicer.calls
    body = submission(pdf(KYC_DOCUMENT_MAX_BYTES - 1024), isVerified=True)
    assert len(body) > DEFAULT_CAP

    reply = capped_gateway.call("POST", SUBMIT, body, {**JSON, **token})

    assert_unknown_fields(reply, "isVerified")
    assert kyc_double.servicer.calls == calls_before


async def test_a_document_of_the_kyc_cap_comes_back_whole_as_json(
    capped_gateway: GatewayUnderTest, token: dict[str, str]
) -> None:
    data = pdf(KYC_DOCUMENT_MAX_BYTES)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{capped_gateway.port}", options=BIG) as ch:
        stored = await kyc_pb2_grpc.KycServiceStub(ch).SubmitKyc(
            kyc_pb2.SubmitKycRequest(document_file=data), metadata=list(token.items())
        )

    reply = capped_gateway.call(
        "GET", f"/v1/admin/kyc/{stored.submission.submission_id}", headers=token
    )

    assert reply.status == 200, reply.body[:500]
    assert len(reply.body) > 4 * MiB  # over the transcoder's default reply buffer
    assert base64.b64decode(reply.json()["documentFile"]) == data


def test_other_json_routes_keep_the_default_cap(
    capped_gateway: GatewayUnderTest, kyc_double: ThreadedKycDouble, token: dict[str, str]
) -> None:
    calls_before = kyc_double.servicer.calls
    reason = json.dumps({"requestId": "r-1", "reason": "x" * DEFAULT_CAP})

    register = announced(capped_gateway, "/v1/auth/register", DEFAULT_CAP + 1, {})
    # Without a token the raised route does not apply: a big anonymous body is not held.
    anonymous = announced(capped_gateway, SUBMIT, DEFAULT_CAP + 1, {})
    reject = capped_gateway.call("POST", "/v1/admin/kyc/s-1:reject", reason, {**JSON, **token})
    # The raised route is POST only: another method on the same path keeps the default.
    put = capped_gateway.call("PUT", SUBMIT, submission(pdf(DEFAULT_CAP)), {**JSON, **token})

    assert_gateway_error(register, 413, 8, "PAYLOAD_TOO_LARGE")
    assert_gateway_error(anonymous, 413, 8, "PAYLOAD_TOO_LARGE")
    assert_gateway_error(reject, 413, 8, "PAYLOAD_TOO_LARGE")
    assert_gateway_error(put, 413, 8, "PAYLOAD_TOO_LARGE")
    assert kyc_double.servicer.calls == calls_before


# --- native gRPC ---


async def _upload(data: bytes, chunk: int = MiB) -> AsyncIterator[kyc_pb2.UploadKycDocumentRequest]:
    yield kyc_pb2.UploadKycDocumentRequest(
        metadata=kyc_pb2.UploadKycDocumentMetadata(document_size_bytes=len(data))
    )
    for start in range(0, len(data), chunk):
        yield kyc_pb2.UploadKycDocumentRequest(chunk=data[start : start + chunk])


async def _written(
    stub: kyc_pb2_grpc.KycServiceStub,
    messages: AsyncIterator[kyc_pb2.UploadKycDocumentRequest],
    metadata: list[tuple[str, str]],
) -> kyc_pb2.UploadKycDocumentResponse:
    """Writes the stream message by message: a write after the gateway's refusal raises the
    call's status (a request iterator would report the failed send as INTERNAL instead)."""
    call = stub.UploadKycDocument(metadata=metadata)
    async for message in messages:
        await call.write(message)
    await call.done_writing()
    reply: kyc_pb2.UploadKycDocumentResponse = await call
    return reply


@pytest.fixture
async def kyc_stub(
    capped_gateway: GatewayUnderTest,
) -> AsyncIterator[kyc_pb2_grpc.KycServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{capped_gateway.port}", options=BIG) as ch:
        yield kyc_pb2_grpc.KycServiceStub(ch)


async def test_native_grpc_submissions_up_to_the_message_cap_pass_and_larger_ones_do_not(
    kyc_stub: kyc_pb2_grpc.KycServiceStub,
    kyc_double: ThreadedKycDouble,
    token: dict[str, str],
) -> None:
    metadata = list(token.items())
    fits = pdf(GRPC_CAP - 1024)

    passed = await kyc_stub.SubmitKyc(
        kyc_pb2.SubmitKycRequest(document_file=fits), metadata=metadata
    )
    calls_before = kyc_double.servicer.calls
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await kyc_stub.SubmitKyc(
            kyc_pb2.SubmitKycRequest(document_file=pdf(GRPC_CAP)), metadata=metadata
        )

    assert passed.submission.document_size_bytes == len(fits)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert kyc_double.servicer.calls == calls_before


async def test_a_streamed_upload_of_the_kyc_cap_passes_and_a_longer_stream_is_cut(
    kyc_stub: kyc_pb2_grpc.KycServiceStub,
    kyc_double: ThreadedKycDouble,
    token: dict[str, str],
) -> None:
    metadata = list(token.items())
    data = pdf(KYC_DOCUMENT_MAX_BYTES)

    passed = await kyc_stub.UploadKycDocument(_upload(data, 64 * 1024), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _written(kyc_stub, _upload(pdf(GRPC_CAP)), metadata)

    assert kyc_double.servicer.files[passed.submission.submission_id] == data
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_other_grpc_routes_keep_the_default_cap(
    capped_gateway: GatewayUnderTest, token: dict[str, str]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{capped_gateway.port}", options=BIG) as ch:
        admin = kyc_pb2_grpc.KycAdminServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as small:
            await admin.AdminRejectKyc(
                kyc_pb2.AdminRejectKycRequest(reason="x"), metadata=list(token.items())
            )
        with pytest.raises(grpc.aio.AioRpcError) as big:
            await admin.AdminRejectKyc(
                kyc_pb2.AdminRejectKycRequest(reason="x" * DEFAULT_CAP),
                metadata=list(token.items()),
            )

    assert small.value.code() == grpc.StatusCode.UNIMPLEMENTED  # reached the double
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
