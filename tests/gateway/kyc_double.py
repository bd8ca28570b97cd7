"""A test double of the kyc service for the gateway's body cap tests.

It speaks the real `vaultpay.kyc.v1` contract (plus gRPC health) and takes messages of any
size, so every refusal a test sees is the gateway's:

- `SubmitKyc` keeps the file under a fresh submission id and answers with its size;
- `UploadKycDocument` reads the whole stream and keeps the chunks' bytes the same way;
- `AdminGetKycSubmission` returns a kept file (NOT_FOUND for an unknown id);
- `GetKycStatus` answers an empty status (a small RPC of the same service).

`calls` counts the calls that arrived, so a test can tell that a request was stopped at the
edge. It runs on an event loop of its own in a background thread, like the auth double.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.gateway.harness import ServerThread
from vaultpay.kyc.v1 import kyc_pb2, kyc_pb2_grpc

__all__ = ["KycDouble", "ThreadedKycDouble"]

# Far above any cap of the gateway: the double never refuses a size.
_NO_LIMIT = 256 * 1024 * 1024


class KycDouble(kyc_pb2_grpc.KycServiceServicer, kyc_pb2_grpc.KycAdminServiceServicer):
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.calls = 0

    def _keep(self, data: bytes) -> kyc_pb2.KycSubmission:
        submission_id = str(uuid.uuid4())
        self.files[submission_id] = data
        return kyc_pb2.KycSubmission(
            submission_id=submission_id,
            status=kyc_pb2.KYC_STATUS_PENDING,
            has_document_file=bool(data),
            document_size_bytes=len(data),
        )

    async def SubmitKyc(
        self, request: kyc_pb2.SubmitKycRequest, context: grpc.aio.ServicerContext
    ) -> kyc_pb2.SubmitKycResponse:
        self.calls += 1
        return kyc_pb2.SubmitKycResponse(submission=self._keep(request.document_file))

    async def UploadKycDocument(
        self,
        request_iterator: AsyncIterator[kyc_pb2.UploadKycDocumentRequest],
        context: grpc.aio.ServicerContext,
    ) -> kyc_pb2.UploadKycDocumentResponse:
        self.calls += 1
        chunks = [message.chunk async for message in request_iterator]
        return kyc_pb2.UploadKycDocumentResponse(submission=self._keep(b"".join(chunks)))

    async def GetKycStatus(
        self, request: kyc_pb2.GetKycStatusRequest, context: grpc.aio.ServicerContext
    ) -> kyc_pb2.GetKycStatusResponse:
        self.calls += 1
        return kyc_pb2.GetKycStatusResponse()

    async def AdminGetKycSubmission(
        self,
        request: kyc_pb2.AdminGetKycSubmissionRequest,
        context: grpc.aio.ServicerContext,
    ) -> kyc_pb2.AdminGetKycSubmissionResponse:
        self.calls += 1
        if request.submission_id not in self.files:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such submission")
        data = self.files[request.submission_id]
        return kyc_pb2.AdminGetKycSubmissionResponse(
            submission=kyc_pb2.KycSubmission(
                submission_id=request.submission_id, document_size_bytes=len(data)
            ),
            document_file=data,
        )

    async def AdminListKycSubmissions(
        self,
        request: kyc_pb2.AdminListKycSubmissionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> kyc_pb2.AdminListKycSubmissionsResponse:
        return await _unimplemented(context)

    async def AdminApproveKyc(
        self, request: kyc_pb2.AdminApproveKycRequest, context: grpc.aio.ServicerContext
    ) -> kyc_pb2.AdminApproveKycResponse:
        return await _unimplemented(context)

    async def AdminRejectKyc(
        self, request: kyc_pb2.AdminRejectKycRequest, context: grpc.aio.ServicerContext
    ) -> kyc_pb2.AdminRejectKycResponse:
        return await _unimplemented(context)

    async def AdminRotateKycKey(
        self, request: kyc_pb2.AdminRotateKycKeyRequest, context: grpc.aio.ServicerContext
    ) -> kyc_pb2.AdminRotateKycKeyResponse:
        return await _unimplemented(context)


async def _unimplemented(context: grpc.aio.ServicerContext) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the double")
    raise AssertionError("abort returned")


async def _start() -> tuple[grpc.aio.Server, KycDouble, int]:
    options = [
        ("grpc.max_receive_message_length", _NO_LIMIT),
        ("grpc.max_send_message_length", _NO_LIMIT),
    ]
    server = grpc.aio.server(options=options)
    servicer = KycDouble()
    kyc_pb2_grpc.add_KycServiceServicer_to_server(servicer, server)
    kyc_pb2_grpc.add_KycAdminServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, port


class ThreadedKycDouble(ServerThread):
    """The kyc double on 127.0.0.1:<free port>, served from a private event loop thread."""

    def __init__(self) -> None:
        super().__init__()
        self._server, self.servicer, self.port = self.run(_start())
